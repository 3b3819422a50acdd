/** Secure Boot key tooling: X.509 certificates, EFI signature lists, signed variable updates, key hierarchies. */
export * from './x509.js';
export * from './esl.js';
export * from './auth.js';
export * from './keys.js';
