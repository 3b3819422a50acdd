/**
 * Splitstreams: a byte stream (usually a tar layer) stored as inline bytes plus references to repository
 * objects, in the composefs-rs format. See format.ts for the layout, reader.ts / writer.ts for the API.
 */
export * from './format.js';
export { readSplitStream, readSplitStreamFile, catSplitStream, type SplitStream, type SplitStreamReader, type SplitStreamFileSource, type SplitStreamChunk, type SplitStreamHeader, type FileRange, type ReadSplitStreamOptions } from './reader.js';
export { SplitStreamWriter, type ObjectSink, type SplitStreamWriterOptions, type FinishedSplitStream } from './writer.js';
