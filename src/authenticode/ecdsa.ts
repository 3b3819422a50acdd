/**
 * ECDSA signing of a precomputed digest (FIPS 186-4 §6.4) on P-256 and P-384. Node's crypto only signs
 * messages (it hashes them itself), but a CMS signer signs the digest of the signed attributes, the same
 * interface an HSM or `openssl pkeyutl` offers. The nonce k comes from the CSPRNG by rejection sampling.
 * The key's public point is recomputed from the private scalar and compared with Node's before first use,
 * which checks the curve arithmetic and constants on every key.
 */
import { randomBytes, type KeyObject } from 'node:crypto';
import { BootcfsError } from '../errors.js';
import { integer, seq } from './der.js';

interface Curve { p: bigint; n: bigint; b: bigint; gx: bigint; gy: bigint; bytes: number }

const CURVES: Record<string, Curve> = {
  'P-256': {
    p: 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffffn,
    n: 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n,
    b: 0x5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604bn,
    gx: 0x6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296n,
    gy: 0x4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5n,
    bytes: 32,
  },
  'P-384': {
    p: 0xfffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000ffffffffn,
    n: 0xffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973n,
    b: 0xb3312fa7e23ee7e4988e056be3f82d19181d9c6efe8141120314088f5013875ac656398d8a2ed19d2a85c8edd3ec2aefn,
    gx: 0xaa87ca22be8b05378eb1c71ef320ad746e1d3b628ba79b9859f741e082542a385502f25dbf55296c3a545e3872760ab7n,
    gy: 0x3617de4a96262c6f5d9e98bf9292dc29f8f41dbd289a147ce9da3113b5f0b8c00a60b1ce1d7e819d7a431d7c90ea0e5fn,
    bytes: 48,
  },
};

const mod = (a: bigint, m: bigint): bigint => ((a % m) + m) % m;

function inv(a: bigint, m: bigint): bigint {
  let [r0, r1] = [mod(a, m), m];
  let [s0, s1] = [1n, 0n];
  while (r1 !== 0n) {
    const q = r0 / r1;
    [r0, r1] = [r1, r0 - q * r1];
    [s0, s1] = [s1, s0 - q * s1];
  }
  if (r0 !== 1n) throw new BootcfsError('EINTERNAL', 'ECDSA: value not invertible');
  return mod(s0, m);
}

// Jacobian coordinates (X, Y, Z) for y² = x³ − 3x + b; Z = 0 is the point at infinity.
type Jac = [bigint, bigint, bigint];

function dbl(c: Curve, [x, y, z]: Jac): Jac {
  if (z === 0n || y === 0n) return [0n, 1n, 0n];
  const p = c.p;
  const zz = mod(z * z, p);
  const m = mod(3n * (x - zz) * (x + zz), p);
  const yy = mod(y * y, p);
  const s = mod(4n * x * yy, p);
  const x3 = mod(m * m - 2n * s, p);
  const y3 = mod(m * (s - x3) - 8n * yy * yy, p);
  const z3 = mod(2n * y * z, p);
  return [x3, y3, z3];
}

function add(c: Curve, a: Jac, b: Jac): Jac {
  if (a[2] === 0n) return b;
  if (b[2] === 0n) return a;
  const p = c.p;
  const z1z1 = mod(a[2] * a[2], p);
  const z2z2 = mod(b[2] * b[2], p);
  const u1 = mod(a[0] * z2z2, p);
  const u2 = mod(b[0] * z1z1, p);
  const s1 = mod(a[1] * b[2] * z2z2, p);
  const s2 = mod(b[1] * a[2] * z1z1, p);
  if (u1 === u2) return s1 === s2 ? dbl(c, a) : [0n, 1n, 0n];
  const h = mod(u2 - u1, p);
  const r = mod(s2 - s1, p);
  const hh = mod(h * h, p);
  const hhh = mod(h * hh, p);
  const v = mod(u1 * hh, p);
  const x3 = mod(r * r - hhh - 2n * v, p);
  const y3 = mod(r * (v - x3) - s1 * hhh, p);
  const z3 = mod(h * a[2] * b[2], p);
  return [x3, y3, z3];
}

function mulG(c: Curve, k: bigint): [bigint, bigint] {
  let r: Jac = [0n, 1n, 0n];
  const g: Jac = [c.gx, c.gy, 1n];
  for (let i = BigInt(k.toString(2).length - 1); i >= 0n; i--) {
    r = dbl(c, r);
    if ((k >> i) & 1n) r = add(c, r, g);
  }
  if (r[2] === 0n) throw new BootcfsError('EINTERNAL', 'ECDSA: point at infinity');
  const zi = inv(r[2], c.p);
  const zi2 = mod(zi * zi, c.p);
  return [mod(r[0] * zi2, c.p), mod(r[1] * zi2 * zi, c.p)];
}

const b64uInt = (s: string): bigint => BigInt(`0x${Buffer.from(s, 'base64url').toString('hex') || '0'}`);

export interface EcdsaKey {
  curve: string;
  sign(digest: Buffer): Buffer;
}

/** Wraps a Node EC private key (P-256 or P-384) for signing digests; checks the curve arithmetic against the key. */
export function ecdsaKey(key: KeyObject): EcdsaKey {
  const jwk = key.export({ format: 'jwk' });
  const curveName = jwk.crv ?? '';
  const c = CURVES[curveName];
  if (c === undefined || jwk.d === undefined || jwk.x === undefined || jwk.y === undefined) {
    throw new BootcfsError('EINVAL', `ECDSA key on curve '${curveName}' is not supported (P-256 and P-384 are)`);
  }
  const d = b64uInt(jwk.d);
  const [qx, qy] = mulG(c, d);
  if (qx !== b64uInt(jwk.x) || qy !== b64uInt(jwk.y)) throw new BootcfsError('EINTERNAL', `ECDSA: public point mismatch on ${curveName}`);
  const nBits = c.n.toString(2).length;
  return {
    curve: curveName,
    sign(digest: Buffer): Buffer {
      let e = BigInt(`0x${digest.toString('hex') || '0'}`);
      if (digest.length * 8 > nBits) e >>= BigInt(digest.length * 8 - nBits);
      for (;;) {
        const k = BigInt(`0x${randomBytes(c.bytes).toString('hex')}`);
        if (k === 0n || k >= c.n) continue;
        const r = mod(mulG(c, k)[0], c.n);
        if (r === 0n) continue;
        const s = mod(inv(k, c.n) * (e + r * d), c.n);
        if (s === 0n) continue;
        const hex = (v: bigint): Buffer => Buffer.from(v.toString(16).padStart(c.bytes * 2, '0'), 'hex');
        return seq(integer(hex(r)), integer(hex(s)));
      }
    },
  };
}
