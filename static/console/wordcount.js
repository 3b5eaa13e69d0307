// The examiners' rule, exactly as core/chat/wordlimit.py char_count counts: every character,
// punctuation included, except whitespace. "Whitespace" is Python's str.isspace(), which
// differs from JavaScript's \s (it has U+001C–U+001F and U+0085, not U+FEFF), so the set
// is spelled out. Code points are counted, not UTF-16 units, as Python does.
const PY_SPACE = /[\t\n\v\f\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]/u;

/** Characters an examiner counts in `text`. */
export function charCount(text) {
  let n = 0;
  for (const ch of text) if (!PY_SPACE.test(ch)) n += 1;
  return n;
}
