/** Authenticode for UEFI Secure Boot: PE image digests, signing (sbsign-compatible) and verification. */
export { AUTHENTICODE_HASHES, authenticodeDigest, authenticodeLayout, isAuthenticodeHash, type AuthenticodeHash, type AuthenticodeLayout } from './digest.js';
export {
  BareKernelError, SigningError, buildAuthenticodeSignature, commandSigner, isBareKernel, keySigner, parseCertificateTable, parseCertificates,
  signPe, spcIndirectDataContent, winCertificate, type SignOptions, type Signer,
} from './sign.js';
export { parseAuthenticodeSignature, verifyPe, type SignatureReport, type VerifyOptions, type VerifyResult } from './verify.js';
