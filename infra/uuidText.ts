// Uuid text checks by hand, for the per-vote paths: the token's two ids, the body's three, the
// journal's vote id per row and the metadata's election id. A regex test per id was 2-3% of a
// vote's CPU in the profile (bench/README.md); these loops accept exactly what the regexes do
// (uuidText.test.ts holds them to it).

/** Per ASCII code: 1 for 0-9 and a-f, 2 for A-F, 0 for anything else. */
const hexDigitKind = new Uint8Array(128);
for (let c = 0x30; c <= 0x39; c++) hexDigitKind[c] = 1;
for (let c = 0x61; c <= 0x66; c++) hexDigitKind[c] = 1;
for (let c = 0x41; c <= 0x46; c++) hexDigitKind[c] = 2;

function isUuidShaped(value: string, acceptedKinds: number): boolean {
  if (value.length !== 36) return false;
  for (let i = 0; i < 36; i++) {
    const c = value.charCodeAt(i);
    if (i === 8 || i === 13 || i === 18 || i === 23) {
      if (c !== 0x2d) return false; // '-'
    } else if (c >= 128 || (hexDigitKind[c]! & acceptedKinds) === 0) {
      return false;
    }
  }
  return true;
}

/** `/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(value)`. */
export function isUuidText(value: string): boolean {
  return isUuidShaped(value, 3);
}

/** The same in lower case only (the ids we write ourselves, e.g. in tokens). */
export function isLowerCaseUuidText(value: string): boolean {
  return isUuidShaped(value, 1);
}
