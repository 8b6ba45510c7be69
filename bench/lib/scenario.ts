/**
 * The contract between the benchmark runner (bench/run.ts) and each scenario (bench/scenarios/*.ts).
 * A scenario runs corral and bare Node under the same load in the same run and reports ratios.
 */

/** What the runner gives every scenario. */
export interface BenchContext {
  /** `npm run bench -- --quick`: small sizes, well under a minute per scenario; a smoke check. */
  readonly quick: boolean;
  /** Progress output (stderr). */
  log(message: string): void;
}

/** One row-and-column table of the report. */
export interface Table {
  readonly title: string;
  readonly columns: readonly string[];
  readonly rows: readonly (readonly (string | number | null)[])[];
}

/** A line chart the report draws as SVG: one or more series of (x, y) points. */
export interface Chart {
  readonly title: string;
  readonly xLabel: string;
  readonly yLabel: string;
  readonly series: readonly {
    readonly name: string;
    readonly points: readonly (readonly [number, number])[];
    /** A reference line (ideal, target, capacity) rather than a measurement: drawn grey and dashed. */
    readonly reference?: boolean;
  }[];
}

/** One target from the benchmark issue, with what this run measured. */
export interface TargetCheck {
  readonly target: string;
  readonly measured: string;
  readonly met: boolean;
  /** Where missed: by how much, why, and what would close it. */
  readonly note?: string;
}

/** What a scenario returns. */
export interface ScenarioResult {
  /** Short id, e.g. `steady-state`. */
  readonly id: string;
  readonly title: string;
  /** corral's configuration and the load, for the report. */
  readonly config: Readonly<Record<string, unknown>>;
  readonly tables: readonly Table[];
  readonly charts: readonly Chart[];
  readonly targets: readonly TargetCheck[];
  /** Raw numbers for bench/results/<date>.json. */
  readonly raw: Readonly<Record<string, unknown>>;
}

/** A scenario module exports `scenario`. */
export interface Scenario {
  readonly id: string;
  /**
   * Longest the scenario may take, in seconds, quick and full; past it the runner reports it as
   * failed and stops. Optional: the runner has a default per scenario (bench/run.ts).
   */
  readonly budgetSeconds?: { readonly quick: number; readonly full: number };
  run(ctx: BenchContext): Promise<ScenarioResult>;
}
