#!/usr/bin/env bash
# Generate seed corpora for every fuzz target into fuzz/corpus/<target>/ (gitignored).
# Sources: the project's own fixtures (demo DBC, demo candump logs) and, if present,
# /work/shared/fixtures/external/*.dbc (read at run time, never copied into git).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
data="$root/crates/telematics-can/data"
ext="${TELEMATICS_EXTERNAL_FIXTURES:-$root/../shared/fixtures/external}"
c="$here/corpus"
mkdir -p "$c"/{dbc_parse,candump_line,can_decode,cose_envelope,reset_auth,config_toml,admin_frame,payload_cbor,cose_plaintext,reset_auth_signed,session_request,deterministic_cbor,device_revocation,frame_protection}

# dbc_parse: demo DBC, the crate's test DBCs + external DBCs.
cp "$data/demo_car.dbc" "$c/dbc_parse/demo_car.dbc"
# the crate's own DBC cases (29-bit ids with and without bit 31, placeholder, long names)
for f in "$root"/crates/telematics-can/tests/data/*.dbc; do cp "$f" "$c/dbc_parse/case_$(basename "$f")"; done
if compgen -G "$ext/*.dbc" >/dev/null; then
  for f in "$ext"/*.dbc; do cp "$f" "$c/dbc_parse/ext_$(basename "$f")"; done
else
  echo "note: no external DBCs at $ext (set TELEMATICS_EXTERNAL_FIXTURES)" >&2
fi

# candump_line: chunks of the demo logs (small inputs fuzz faster).
for log in "$data"/demo_*.log; do
  split -l 20 -d -a 3 <(head -n 400 "$log") "$c/candump_line/$(basename "$log" .log)_"
done

# can_decode: 4-byte big-endian id (bit 31 = extended) + data, from the demo logs.
head -n 2000 "$data"/demo_drive.log "$data"/demo_park.log 2>/dev/null \
  | awk '$3 ~ /#/ {split($3, a, "#"); print a[1], a[2]}' | sort -u | head -n 200 \
  | while read -r id d; do
      if [ "${#id}" -gt 3 ]; then idn=$(( 0x$id | 0x80000000 )); else idn=$(( 0x$id )); fi
      printf '%08x%s' "$idn" "$d" | xxd -r -p > "$c/can_decode/${id}_$d"
    done

# config_toml: minimal valid and a few near-valid configs.
printf '[vehicle]\nvin = "WDD2030461A000001"\n' > "$c/config_toml/minimal.toml"
printf '[vehicle]\nvin = "WDD2030461A000001"\n[mqtt]\nport = 8883\n' > "$c/config_toml/mqtt.toml"
printf '[vehicle]\nvin = "WDD2030461A000001"\n[can]\nprofile = "/usr/share/telematicsd/demo_car_profile.toml"\n' > "$c/config_toml/profile.toml"
printf '[vehicle]\nvin = "SHORT"\n[security]\npbkdf2_iterations = 10\n[telemetry]\nperiod_s = 0\n' > "$c/config_toml/invalid.toml"

# admin_frame: CBOR maps {"op": "..."} (serde internally tagged enum).
for op in status list_devices; do
  n=${#op}
  printf 'a1626f70%02x%s' $((0x60 + n)) "$(printf '%s' "$op" | xxd -p | tr -d '\n')" | xxd -r -p > "$c/admin_frame/$op.cbor"
done

# payload_cbor / cose_envelope / reset_auth: small CBOR skeletons (tag 16 = COSE_Encrypt0,
# tag 18 = COSE_Sign1, empty map, empty array); libFuzzer's CMP tracing grows the rest.
printf 'a0' | xxd -r -p > "$c/payload_cbor/empty_map"
printf 'a2626174016376696e6141' | xxd -r -p > "$c/payload_cbor/map_at_vin"
printf 'd08443a10103a1054c000000000000000000000000' | xxd -r -p > "$c/cose_envelope/encrypt0_skel"
printf 'd28443a10127a0f640' | xxd -r -p > "$c/reset_auth/sign1_skel"
# Valid messages from the test vectors of docs/protocol.md (```vector <name> blocks).
# vec <block> <field>: the hex value of <field> in that block.
proto="$root/docs/protocol.md"
vec() {
  awk -v b="$1" -v f="$2" '
    $0 == "```vector " b { inb = 1; next }
    /^```/ { inb = 0 }
    inb && index($0, f ":") == 1 { sub("^" f ":[ ]*", ""); print; exit }' "$proto"
}
for v in command-1 command-2; do
  pt=$(vec "$v" plaintext); iv=$(vec "$v" iv); env=$(vec "$v" envelope)
  [ -n "$pt" ] && [ -n "$iv" ] && [ -n "$env" ] || { echo "vector $v missing in $proto" >&2; exit 1; }
  # cose_envelope: the real envelope (opens only with its own secret, but decodes fully).
  printf '%s' "$env" | xxd -r -p > "$c/cose_envelope/$v"
  printf '%s' "$env" | xxd -r -p > "$c/deterministic_cbor/$v"
  printf '%s' "$pt" | xxd -r -p > "$c/deterministic_cbor/${v}_plaintext"
  # cose_plaintext: flags || IV || plaintext (see fuzz_targets/cose_plaintext.rs).
  # 00 = active key, in window; 08 = last counter 41; 10 = one failure from back-off;
  # 20 = back-off running; 30 = hard locked; 40 = expired; 01 = revoked key; 04 = other VIN.
  for fl in 00 08 10 20 30 40 01 04; do
    printf '%s%s%s' "$fl" "$iv" "$pt" | xxd -r -p > "$c/cose_plaintext/${v}_$fl"
  done
done
# A wrong code (2581) in an otherwise valid command-1 plaintext.
pt1=$(vec command-1 plaintext); iv1=$(vec command-1 iv)
printf '00%s%s' "$iv1" "${pt1%30}31" | xxd -r -p > "$c/cose_plaintext/command-1_wrong_code"
rp=$(vec reset-1 payload); s1=$(vec reset-1 sign1)
[ -n "$rp" ] && [ -n "$s1" ] || { echo "vector reset-1 missing in $proto" >&2; exit 1; }
printf '%s' "$s1" | xxd -r -p > "$c/reset_auth/reset-1"
# reset_auth_signed: flags || payload (see fuzz_targets/reset_auth_signed.rs).
# 00 = in window; 01 = signed for another VIN; 02 = expired; 04 = not yet valid; 08 = nonce used.
for fl in 00 01 02 04 06 08; do
  printf '%s%s' "$fl" "$rp" | xxd -r -p > "$c/reset_auth_signed/reset-1_$fl"
done

# session_request: {1: kid, 2: challenge} (deterministic CBOR) and near misses.
printf 'a2014801020304050607080250000102030405060708090a0b0c0d0e0f' | xxd -r -p > "$c/session_request/ok_16"
printf 'a2014801020304050607080240' | xxd -r -p > "$c/session_request/ok_empty"
printf 'a1014801020304050607' | xxd -r -p > "$c/session_request/missing"
# device_revocation: flags || data (see fuzz_targets/device_revocation.rs): the revoke-1
# payload to be signed (01), and the revoke-1 COSE_Sign1 as raw bytes (00).
vp=$(vec revoke-1 payload); vs=$(vec revoke-1 sign1)
[ -n "$vp" ] && [ -n "$vs" ] || { echo "vector revoke-1 missing in $proto" >&2; exit 1; }
printf '01%s' "$vp" | xxd -r -p > "$c/device_revocation/revoke-1_payload"
printf '00%s' "$vs" | xxd -r -p > "$c/device_revocation/revoke-1_sign1"
# frame_protection: 12-byte header (scheme, four LE u16 parameters, data_length, counter; see
# fuzz_targets/frame_protection.rs) + frame: the published examples of each scheme.
fp() { printf '%s' "$2" | xxd -r -p > "$c/frame_protection/$1"; }
fp xor_demo      '010700000000000000ffff000100000000000001'
fp crc8_check    '020900000000000000ffff0031323334353637383900'
fp p1_both_0x123 '032301000008003000ffff00cc00000000000000'
fp p1_nibble     '032301000008003300ffff002a10000000000000'
fp p2_zero_ids   '040000000000000000ffff014501000000000000'
fp p5_short      '053412000000000000ffff001cca000000000000'
fp p5_long       '05341240000000000080000000000000000000002891000000000000'
fp secoc_default '06420040000800180005000501020304'
echo "seeded: $(find "$c" -type f | wc -l) files in $c"
