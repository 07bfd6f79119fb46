// Small helpers the stand-alone bench scripts share.

/** A positive integer option from the environment, 1..max; anything else stops the script with its name. */
export function intFromEnv(name: string, fallback: number, max: number): number {
  const value = Number(process.env[name] ?? fallback);
  if (!(Number.isInteger(value) && value >= 1 && value <= max)) throw new Error(`${name} must be 1..${max}`);
  return value;
}

/** 0..count-1 in a random order: voter numbers as real votes arrive, landing all over an index. */
export function shuffledRange(count: number): number[] {
  const values = Array.from({ length: count }, (_, i) => i);
  for (let i = values.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [values[i], values[j]] = [values[j]!, values[i]!];
  }
  return values;
}
