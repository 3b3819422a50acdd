/**
 * bootcfs library API. Layers (docs/ARCHITECTURE.md): formats → composefs → (repository → oci → boot →
 * install) → cli. Everything the CLI does is available here as typed functions.
 */
export * from './errors.js';
export * from './tree/model.js';
export { readDirectoryTree, type ScanOptions, ScanError, DEFAULT_INLINE_MAX } from './tree/from-directory.js';
export * from './fsverity/index.js';
export * from './dumpfile/index.js';
export { writeImageV1, type WriteV1Options } from './erofs/writer-v1.js';
export { writeImageV2, type WriteV2Options } from './erofs/writer-v2.js';
export { openImage, ErofsImage, type ImageHeader, type ErofsInode, type DirEntry } from './erofs/reader.js';
export { imageToTree, listObjects, missingObjects, type ImageToTreeOptions } from './composefs/info.js';
export { buildImage, buildImageFile, type MkcomposefsOptions } from './composefs/mkcomposefs.js';
export { DigestStore, objectPathForDigest } from './composefs/digest-store.js';
export { writeFileAtomic } from './util/atomic-file.js';
export { lgetxattrs, lsetxattr } from './sys/libc.js';
export { VERSION } from './version.js';

// repository layer
export * from './splitstream/index.js';
export * from './repository/index.js';
export { zstdCompress, zstdDecompress, zstdDecompressStream, ZstdCompressStream } from './util/zstd.js';

// oci layer: image sources
export { openImageSource, openLayer, type ImageSource, type ManifestResult, type ConfigResult, type OpenSourceOptions } from './oci/source.js';
export { parseImageReference, formatImageReference, ImageReferenceError, type ImageReference } from './oci/reference.js';
export { parseDigest, digestOf, DigestMismatchError, SizeMismatchError, InvalidDigestError } from './oci/digest.js';
export { MediaTypes, parseManifestDocument, parseImageConfig, selectPlatformManifest, OciFormatError, type OciDescriptor, type OciManifest, type OciIndex, type OciImageConfig, type Platform } from './oci/types.js';
export { RegistryClient, RegistryError, type RegistryOptions } from './oci/registry.js';
export { tarSegments, tarEntries, type TarEntry, type TarSegment, TarSparseError } from './oci/tar.js';
export { LayerTreeBuilder, buildTreeFromLayers, digestOnly, normaliseTarPath } from './oci/layers.js';
export { transformForOci, OciTransformError } from './oci/transform.js';
export { keepXattr, applyXattrRule, XATTR_RULE_VERSION, XATTR_RULE_NAME } from './oci/xattr-rule.js';
export { buildImageTree, computeImageId, writeImageBytes, ociTagRef, layerStreamName, configStreamName, manifestStreamName, type ImageIdOptions } from './oci/image.js';
export { pullImage, importLayer, IMAGE_REF, XATTR_RULE_REF, type PullOptions, type PullResult, type PullProgressEvent } from './oci/pull.js';
export { computeDirectoryId, computeDirectoryImageId, createImageFromDirectory, readDirectoryForRepository } from './oci/directory-image.js';
export { mountImage, resolveImageId } from './repository/mount.js';
export { OciLayoutWriter, tarLayoutDirectory } from './oci/layout-writer.js';
export { writeTar, type TarFileEntry } from './oci/tar-writer.js';

// boot layer: PE/UKI, Authenticode, Secure Boot keys, BLS, kargs
export { parsePe, findSection, sectionData, peChecksum, type PeImage, type PeSection } from './pe/pe.js';
export * from './authenticode/index.js';
export { parseBlsEntry, writeBlsEntry, compareEntries, compareVersions, entryFileName, sortKey, type BlsEntry } from './boot/bls.js';
export { parseKargsToml, kargsFromFiles, kargsFromRootDirectory, splitCmdline, composefsKarg, composefsArg } from './boot/kargs.js';

// sealed images
export { buildSealed, readBootInputs, sealedDigest, SealError, type BuildSealedOptions, type BuildSealedResult } from './seal/build.js';
export { verifySealed, type VerifySealedResult, type VerifySealedOptions } from './seal/verify.js';
export { computeComposefsDigestOfImage, computeComposefsDigestOfDirectory } from './seal/digest.js';
export { ukifyRootfs } from './seal/ukify.js';
export { diffDumpfiles, type DumpDifference } from './seal/dump-diff.js';
export { buildUki, buildUkiDetailed, inspectUki, type UkiInputs, type UkiInfo } from './uki/uki.js';
export { addSections, PeWriteError, type NewSection } from './pe/pe-writer.js';

// install layer: disk formats written without mounts, install to-disk / to-filesystem
export { installToDisk, installToFilesystem, checkInstalledDisk, verityWorksIn, type InstallToDiskOptions, type InstallToFilesystemOptions, type InstallResult, type DiskCheck } from './install/install.js';
export { writeDeployment, InstallError, VERITY_PENDING, type DeployOptions, type PreparedDeployment, type VerityMode } from './install/deployment.js';
export { materializeTree, type MaterializeStats } from './install/materialize.js';
export { parseOrigin, writeOrigin, originFileName, type DeploymentOrigin, type BootType } from './boot/origin.js';
// deploy layer: status, /etc merge
export { readHostStatus, formatJson, formatYaml, formatHumanReadable, filterToBooted, type BootcHost } from './deploy/status.js';
export { planEtcMerge, applyEtcMerge, assertNoEtcConflicts, formatLocalChanges, EtcMergeConflictError } from './deploy/etc-merge.js';
export { planGpt, writeGpt, readGpt, GPT_TYPE_ESP, GPT_TYPE_LINUX_ROOT_X86_64, GPT_TYPE_LINUX_FILESYSTEM, type GptLayout, type GptPartitionSpec } from './install/gpt.js';
export { buildFat32Image, writeFat32Image, readFat32, fat32ImageToBuffer, type Fat32Image, type Fat32Options } from './install/fat.js';
