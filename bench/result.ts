/** One benchmark figure: bootcfs vs the reference tool, measured in the same run on the same input. */
export interface BenchResult {
  /** What was measured, e.g. "fs-verity digest 1 GiB sha256". */
  name: string;
  /** bootcfs' figure, in `unit`. */
  ours: number;
  /** The reference tool's figure, in `unit`. */
  reference: number;
  /** e.g. "MB/s" (10^6 bytes per second) or "s". */
  unit: string;
  /** true for throughputs, false for times. */
  higherIsBetter: boolean;
  /** ours / reference. */
  ratio: number;
  note?: string;
}
