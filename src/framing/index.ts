import { InvalidOptionError } from '../errors.js';
import type { Framing, FramingOption } from './framer.js';
import { lengthPrefixedFraming } from './length-prefixed.js';
import { lineFraming } from './line.js';
import { rawFraming } from './raw.js';

export type { Framer, Framing, FramingOption, LengthPrefixedFramingOptions, LineFramingOptions } from './framer.js';
export { lengthPrefixedFraming } from './length-prefixed.js';
export { lineFraming } from './line.js';
export { rawFraming } from './raw.js';

function checkMaxLength(value: unknown, option: string, max: number): void {
  if (value !== undefined && (!Number.isInteger(value) || (value as number) < 1 || (value as number) > max)) {
    throw new InvalidOptionError(option, `must be an integer from 1 to ${max}, got ${String(value)}`);
  }
}

function checkKeys(o: object, allowed: readonly string[]): void {
  for (const key of Object.keys(o)) {
    if (!allowed.includes(key)) throw new InvalidOptionError(`framing.${key}`, 'is not a known option', 'CORRAL_UNKNOWN_OPTION');
  }
}

/** Turn the `framing` listener option into a {@link Framing}. @internal */
export function resolveFraming(option: FramingOption | undefined): Framing {
  if (option === undefined || option === 'raw') return rawFraming();
  if (option === 'line') return lineFraming();
  if (option === 'length-prefixed') return lengthPrefixedFraming();
  if (typeof option !== 'object' || option === null) {
    throw new InvalidOptionError('framing', `must be 'raw', 'line', 'length-prefixed', an object with a type, or a Framing; got ${String(option)}`);
  }
  if ('createFramer' in option) {
    if (typeof option.createFramer !== 'function' || typeof option.encode !== 'function' || typeof option.name !== 'string') {
      throw new InvalidOptionError('framing', 'a custom Framing needs name, createFramer() and encode()');
    }
    return option;
  }
  if (option.type === 'line') {
    checkKeys(option, ['type', 'maxLength', 'eol']);
    checkMaxLength(option.maxLength, 'framing.maxLength', 2 ** 30);
    if (option.eol !== undefined && option.eol !== '\n' && option.eol !== '\r\n') {
      throw new InvalidOptionError('framing.eol', "must be '\\n' or '\\r\\n'");
    }
    return lineFraming(option);
  }
  if (option.type === 'length-prefixed') {
    checkKeys(option, ['type', 'headerSize', 'maxLength']);
    if (option.headerSize !== undefined && option.headerSize !== 2 && option.headerSize !== 4) {
      throw new InvalidOptionError('framing.headerSize', `must be 2 or 4, got ${String(option.headerSize)}`);
    }
    checkMaxLength(option.maxLength, 'framing.maxLength', option.headerSize === 2 ? 0xffff : 2 ** 30);
    return lengthPrefixedFraming(option);
  }
  throw new InvalidOptionError('framing.type', `must be 'line' or 'length-prefixed', got ${String((option as { type?: unknown }).type)}`);
}
