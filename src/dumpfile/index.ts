/** composefs dumpfile (composefs-dump(5)): parser with mkcomposefs 1.0.8 semantics, composefs-info printer. */
export { parseDumpfile, DUMPFILE_LIMITS, type DumpfileParseOptions } from './parse.js';
export { writeDumpfile, writeDumpfileChunks, type DumpfileWriteOptions } from './write.js';
export { unescapeDumpField, escapeDumpField, escapeDumpBytes, cString, EscapeFlags, DumpEscapeError } from './escape.js';
