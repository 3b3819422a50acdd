/** `x` rounded up to a multiple of `align` (> 0). */
export function roundUp(x: number, align: number): number {
  return Math.ceil(x / align) * align;
}
