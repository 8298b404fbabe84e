import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { parseCsv } from "./csv.js";

/** An RFC 4180 writer: quote every field that needs it, doubling quotes. */
function writeCsv(rows: string[][], eol: string): string {
  const cell = (s: string) => (/[",\r\n]/.test(s) || s === "" ? `"${s.replaceAll('"', '""')}"` : s);
  return rows.map((r) => r.map(cell).join(",")).join(eol);
}

describe("parseCsv", () => {
  test("quotes, doubled quotes, embedded newlines, CRLF, empty fields, line numbers", () => {
    const text = 'a,b,c\r\n"x, y","say ""hi""",\r\n"two\nlines",plain,"cr\r\nlf"\n,,\n';
    const rows = parseCsv(text);
    assert.deepEqual(
      rows.map((r) => [r.line, r.fields]),
      [
        [1, ["a", "b", "c"]],
        [2, ["x, y", 'say "hi"', ""]],
        [3, ["two\nlines", "plain", "cr\r\nlf"]],
        [6, ["", "", ""]],
      ],
    );
    assert.ok(rows.every((r) => r.error === undefined));
  });

  test("byte-order mark, blank lines and a missing final newline", () => {
    const rows = parseCsv('\ufeffh1,h2\n\n1,2\r\n\r\n3,"4"');
    assert.deepEqual(
      rows.map((r) => [r.line, r.fields]),
      [
        [1, ["h1", "h2"]],
        [3, ["1", "2"]],
        [5, ["3", "4"]],
      ],
    );
  });

  test("a quote inside an unquoted field is kept literally", () => {
    assert.deepEqual(parseCsv('5" disk,ok')[0].fields, ['5" disk', "ok"]);
  });

  test("junk after a closing quote flags the row, and the next row still parses", () => {
    const rows = parseCsv('"ab"c,d\ne,f\n');
    assert.match(rows[0].error!, /unexpected character "c" after the closing quote of field 1/);
    assert.deepEqual(rows[0].fields, ["abc", "d"]);
    assert.deepEqual(rows[1], { line: 2, fields: ["e", "f"] });
  });

  test("an unterminated quote names the line it opened on", () => {
    const rows = parseCsv('a,b\n1,2\n3,"never\nclosed\n');
    assert.equal(rows.length, 3);
    assert.equal(rows[2].line, 3);
    assert.match(rows[2].error!, /unterminated quoted field \(the quote opened on line 3/);
  });

  test("round trip of random tables through an independent writer", () => {
    const alphabet = ["a", "b", " ", ",", '"', "\n", "\r\n", "é", "😀", "x"];
    const seed = Math.floor(Math.random() * 1e9);
    let s = seed;
    const rand = (n: number) => {
      s = (s * 1103515245 + 12345) % 2147483648;
      return s % n;
    };
    for (let trial = 0; trial < 200; trial++) {
      const cols = 1 + rand(4);
      const rows = Array.from({ length: 1 + rand(6) }, () =>
        Array.from({ length: cols }, () => Array.from({ length: rand(6) }, () => alphabet[rand(alphabet.length)]).join("")),
      );
      const eol = rand(2) ? "\r\n" : "\n";
      const text = writeCsv(rows, eol);
      const parsed = parseCsv(text);
      // A row whose only field is empty is written as `""`, so no row is read as a blank line.
      assert.deepEqual(
        parsed.map((r) => r.fields),
        rows,
        `seed ${seed}, trial ${trial}: ${JSON.stringify(text)}`,
      );
      // Each row starts on the line after all newlines written before it.
      let line = 1;
      rows.forEach((r, i) => {
        assert.equal(parsed[i].line, line, `seed ${seed}, trial ${trial}, row ${i}`);
        line += 1 + r.join(",").split("\n").length - 1;
      });
    }
  });
});
