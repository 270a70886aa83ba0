/**
 * Where the bytes of an event stream written so far end (the HTML standard's event-stream syntax):
 * between two events, so that an event of the gateway's own may follow without joining one the
 * client has only part of. Lines end in CRLF, LF or CR; an event ends with an empty line.
 */
const LF = 0x0a;
const CR = 0x0d;

export class EventBoundary {
  private wrote = false;
  /** The last three bytes written, oldest first. */
  private b0 = 0;
  private b1 = 0;
  private b2 = 0;

  see(chunk: Buffer): void {
    const n = chunk.length;
    if (n > 0) this.wrote = true;
    if (n >= 3) {
      this.b0 = chunk[n - 3]!;
      this.b1 = chunk[n - 2]!;
      this.b2 = chunk[n - 1]!;
    } else if (n === 2) {
      this.b0 = this.b2;
      this.b1 = chunk[0]!;
      this.b2 = chunk[1]!;
    } else if (n === 1) {
      this.b0 = this.b1;
      this.b1 = this.b2;
      this.b2 = chunk[0]!;
    }
  }

  /** True before any byte, and after an empty line: `\n\n`, `\r\r`, `\n\r`, `\n\r\n`, `\r\r\n`. */
  get at(): boolean {
    const { b0, b1, b2 } = this;
    if (!this.wrote) return true;
    if (b2 === LF && b1 === CR) return b0 === LF || b0 === CR;
    return (b1 === LF || b1 === CR) && (b2 === LF || b2 === CR) && !(b1 === CR && b2 === LF);
  }
}
