"""BTHome v2 decode rate in this interpreter, plain and encrypted (no thresholds).

Run: python bench/bench_bthome.py [seconds-per-case]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from devices.ble.bthome import parse_bthome

MAC = bytes.fromhex("A4C1388D18B2")
KEY = bytes(range(16))
# A typical thermometer advertisement: packet id, battery, temperature, humidity.
OBJECTS = bytes.fromhex("0009" + "0161" + "02CA09" + "03BF13")


def _encrypted(counter: int) -> bytes:
    info = 0x41
    counter_bytes = counter.to_bytes(4, "little")
    nonce = MAC + b"\xd2\xfc" + bytes([info]) + counter_bytes
    sealed = AESCCM(KEY, tag_length=4).encrypt(nonce, OBJECTS, None)
    return bytes([info]) + sealed[:-4] + counter_bytes + sealed[-4:]


def _rate(label: str, payloads: list[bytes], key: bytes | None, seconds: float) -> None:
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for payload in payloads:
            parse_bthome(payload, mac=MAC, bind_key=key)
        done += len(payloads)
    elapsed = time.perf_counter() - start
    print(f"{label:<40} {done / elapsed:>12,.0f} adverts/s")


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    _rate("plain (4 objects)", [b"\x40" + OBJECTS] * 1000, None, seconds)
    # Distinct counters, as a real stream would carry; the replay check is the caller's state.
    _rate("encrypted AES-CCM (4 objects)", [_encrypted(i) for i in range(1000)], KEY, seconds)


if __name__ == "__main__":
    main()
