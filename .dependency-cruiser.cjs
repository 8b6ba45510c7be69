/**
 * corral's architecture rules, checked by `npm run check:deps` (and `.ci/run`):
 * no import cycles in src/ (type-only imports included), node:net/node:tls only in the
 * transports, and the gateway example using corral only through its public entry point.
 * @type {import('dependency-cruiser').IConfiguration}
 */
module.exports = {
  forbidden: [
    {
      name: 'no-cycles',
      severity: 'error',
      comment: 'An import cycle (type-only imports count too): two modules that each need the other are one concept, or a type lives in the wrong file.',
      from: { path: '^src/' },
      to: { circular: true },
    },
    {
      name: 'sockets-only-in-transports',
      severity: 'error',
      comment: 'The core never touches node:net or node:tls: transports (src/transports/) do.',
      from: { path: '^src/', pathNot: '^src/transports/' },
      to: { path: '^(node:)?(net|tls)$', dependencyTypes: ['core'] },
    },
    {
      name: 'gateway-uses-public-api',
      severity: 'error',
      comment: "The gateway example imports corral only as 'corral' (its public API), never corral's files.",
      from: { path: '^examples/amqp-gateway/' },
      to: { path: '^(src|dist)/', pathNot: '^src/index\\.ts$|^dist/index\\.(js|d\\.ts)$' },
    },
    {
      name: 'gateway-imports-corral-by-name',
      severity: 'error',
      comment: "The gateway reaches corral's entry point by its package name, not by a relative path.",
      from: { path: '^examples/amqp-gateway/' },
      to: { path: '^(src|dist)/', dependencyTypes: ['local'] },
    },
    {
      name: 'not-to-unresolvable',
      severity: 'error',
      comment: 'An import that does not resolve would be a module the checks above never saw.',
      from: { path: '^(src|examples/amqp-gateway/src)/' },
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(dist|docs|node_modules|bench/\\.build)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['corral-source', 'import', 'require', 'node', 'default', 'types'],
      extensions: ['.ts', '.d.ts', '.js', '.mjs', '.cjs', '.json'],
      mainFields: ['module', 'main', 'types'],
    },
    reporterOptions: { text: { highlightFocused: true } },
  },
};
