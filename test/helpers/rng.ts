/** Seeded PRNG (xoshiro128**) for property tests: the same seed gives the same cases on every machine. */
export class Rng {
  private s: Uint32Array;
  readonly seed: number;
  constructor(seed: number) {
    this.seed = seed >>> 0;
    // splitmix32 to spread the seed
    let x = this.seed;
    const next = () => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s = new Uint32Array([next(), next(), next(), next()]);
  }
  /** uniform uint32 */
  u32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1]!, 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1]! << 9) >>> 0;
    s[2]! ^= s[0]!;
    s[3]! ^= s[1]!;
    s[1]! ^= s[2]!;
    s[0]! ^= s[3]!;
    s[2]! ^= t;
    s[3] = rotl(s[3]!, 11);
    return result;
  }
  /** integer in [lo, hi] inclusive */
  int(lo: number, hi: number): number {
    const span = hi - lo + 1;
    if (span <= 0x100000000) return lo + Math.floor((this.u32() / 0x100000000) * span);
    return lo + Math.floor(((this.u32() * 0x100000000 + this.u32()) / 2 ** 64) * span);
  }
  float(): number { return this.u32() / 0x100000000; }
  bool(p = 0.5): boolean { return this.float() < p; }
  pick<T>(arr: readonly T[]): T { return arr[this.int(0, arr.length - 1)]!; }
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = this.u32() & 0xff;
    return b;
  }
}
function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
