/**
 * A small RFC 4180 CSV parser: comma separators, CRLF or LF record ends, double-quoted fields
 * that may hold commas, newlines and doubled quotes (`""`). A quote inside an unquoted field is
 * kept literally (as most writers and readers do). Blank lines are not records.
 */

export interface CsvRow {
  /** 1-based line on which the row starts. */
  line: number;
  fields: string[];
  /** Set when the row is malformed; the fields are then a best effort. */
  error?: string;
}

/** Splits CSV text into rows (header included). A leading UTF-8 byte-order mark is ignored. */
export function parseCsv(text: string): CsvRow[] {
  const rows: CsvRow[] = [];
  let i = text.charCodeAt(0) === 0xfeff ? 1 : 0;
  let line = 1;
  const n = text.length;
  while (i < n) {
    const start = line;
    // A blank line (LF or CRLF) is skipped rather than read as a record with one empty field.
    if (text[i] === "\n" || (text[i] === "\r" && text[i + 1] === "\n")) {
      i += text[i] === "\r" ? 2 : 1;
      line++;
      continue;
    }
    const fields: string[] = [];
    let error: string | undefined;
    for (;;) {
      let value = "";
      if (text[i] === '"') {
        const openLine = line;
        i++;
        let closed = false;
        while (i < n) {
          const c = text[i];
          if (c === '"') {
            if (text[i + 1] === '"') {
              value += '"';
              i += 2;
              continue;
            }
            i++;
            closed = true;
            break;
          }
          if (c === "\n") line++;
          value += c;
          i++;
        }
        if (!closed) {
          error ??= `unterminated quoted field (the quote opened on line ${openLine} is never closed)`;
        } else if (i < n && text[i] !== "," && text[i] !== "\n" && !(text[i] === "\r" && text[i + 1] === "\n")) {
          error ??= `unexpected character ${JSON.stringify(text[i])} after the closing quote of field ${fields.length + 1}`;
          // Keep reading the rest of the field as plain text so the row still ends where it should.
          while (i < n && text[i] !== "," && text[i] !== "\n" && !(text[i] === "\r" && text[i + 1] === "\n")) value += text[i++];
        }
      } else {
        while (i < n && text[i] !== "," && text[i] !== "\n" && !(text[i] === "\r" && text[i + 1] === "\n")) value += text[i++];
      }
      fields.push(value);
      if (i < n && text[i] === ",") {
        i++;
        continue;
      }
      break;
    }
    if (i < n) {
      i += text[i] === "\r" ? 2 : 1;
      line++;
    }
    rows.push(error === undefined ? { line: start, fields } : { line: start, fields, error });
  }
  return rows;
}
