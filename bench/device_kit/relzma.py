#!/usr/bin/env python3
"""Re-store wheels' members with ZIP_LZMA (LZMA1 preset 9|extreme) instead of deflate.

usage: python3 relzma.py -o OUTDIR WHEEL...

Member names, order, bytes, timestamps, permissions and RECORD stay the same:
only the zip container's compression method changes, so the wheel installs to a
byte-identical tree. pip extracts wheels with Python's zipfile, which reads
LZMA members (needs the stdlib lzma module). Each output is checked member by
member against its source. (uv and other non-zipfile installers may refuse it.)
"""
import argparse
import lzma
import os
import struct
import zipfile


class _LZMA9Compressor:
    """zipfile's LZMA member format (APPNOTE 5.8.8), with preset 9|extreme."""

    def __init__(self):
        self._props = lzma._encode_filter_properties(
            {"id": lzma.FILTER_LZMA1, "preset": 9 | lzma.PRESET_EXTREME})
        self._comp = lzma.LZMACompressor(lzma.FORMAT_RAW, filters=[
            lzma._decode_filter_properties(lzma.FILTER_LZMA1, self._props)])
        self._hdr = struct.pack("<BBH", 9, 4, len(self._props)) + self._props

    def _with_header(self, out):
        if self._hdr is not None:
            out, self._hdr = self._hdr + out, None
        return out

    def compress(self, data):
        return self._with_header(self._comp.compress(data))

    def flush(self):
        return self._with_header(self._comp.flush())


zipfile.LZMACompressor = _LZMA9Compressor


def repack(src, dst):
    tmp = dst + ".tmp"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp, "w", allowZip64=True) as zout:
        for info in zin.infolist():
            ni = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            ni.external_attr = info.external_attr
            ni.create_system = info.create_system
            ni.compress_type = zipfile.ZIP_LZMA
            zout.writestr(ni, zin.read(info))
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(tmp) as b:
        assert a.namelist() == b.namelist(), src
        for n in a.namelist():
            assert a.read(n) == b.read(n), (src, n)
    os.replace(tmp, dst)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-o", "--outdir", required=True)
    ap.add_argument("wheels", nargs="+")
    a = ap.parse_args()
    os.makedirs(a.outdir, exist_ok=True)
    for src in a.wheels:
        dst = os.path.join(a.outdir, os.path.basename(src))
        if os.path.abspath(dst) == os.path.abspath(src):
            raise SystemExit("OUTDIR must differ from the wheels' folder")
        repack(src, dst)
        print(f"{os.path.getsize(src):>10} -> {os.path.getsize(dst):>10}  {os.path.basename(src)}")


if __name__ == "__main__":
    main()
