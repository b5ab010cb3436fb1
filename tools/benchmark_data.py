#!/usr/bin/env python3
#    Licensed under the Apache License, Version 2.0 (the "License"); you may
#    not use this file except in compliance with the License. You may obtain
#    a copy of the License at
#
#         http://www.apache.org/licenses/LICENSE-2.0
#
#    Unless required by applicable law or agreed to in writing, software
#    distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
#    WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
#    License for the specific language governing permissions and limitations
#    under the License.

"""The benchmark's volumes: how they are made, copied and compared.

Deterministic: the same seed makes the same volume, in any run.
"""

import os
import random
import subprocess

MiB = 1024 * 1024
BLOCK = 32768
EXTENT = 2 * MiB
WORDS = [b'INFO', b'DEBUG', b'WARNING', b'req-3f2a', b'volume', b'backup',
         b'GET', b'/v3/volumes/detail', b'200', b'completed', b'user=admin',
         b'cinder.backup.manager', b'status=available', b'len=4213']


def make_volume(path, size, seed=20261126, content_seed=None):
    """40% zero runs, 30% random, 30% log-like text; deterministic.

    With ``content_seed``, the runs (their kinds and lengths) still come
    from ``seed`` and only the bytes in them from ``content_seed``:
    volumes that differ in content but cost the same work per byte, for
    comparing one operation with several at once.
    """
    rnd = random.Random(seed)
    content = rnd if content_seed is None else random.Random(content_seed)
    written = 0
    with open(path, 'wb') as f:
        while written < size:
            n = min(rnd.randint(1, 32) * 128 * 1024, size - written)
            f.write(_mixed_data(rnd, n, content))
            written += n


def _mixed_data(rnd, n, content=None):
    content = content or rnd
    kind = rnd.random()
    if kind < 0.4:
        return bytes(n)
    if kind < 0.7:
        return content.randbytes(n)
    return _log_text(content, n)


def make_sparse_volume(path, size, percent):
    """A sparse file with ``percent`` % data in scattered 2 MiB extents.

    The extents hold random data and log-like text (half each), no zero
    runs: the holes are the zeros.
    """
    rnd = random.Random(20261129)
    extents = size // EXTENT
    chosen = sorted(rnd.sample(range(extents),
                               max(1, int(extents * percent / 100))))
    with open(path, 'wb') as f:
        f.truncate(size)
        for idx in chosen:
            f.seek(idx * EXTENT)
            f.write(rnd.randbytes(EXTENT) if rnd.random() < 0.5
                    else _log_text(rnd, EXTENT))


def _log_text(rnd, n):
    out = bytearray()
    while len(out) < n:
        out += b'2026-11-26 %02d:%02d:%02d.%03d %d ' % (
            rnd.randrange(24), rnd.randrange(60), rnd.randrange(60),
            rnd.randrange(1000), rnd.randrange(1, 99999))
        out += b' '.join(rnd.choice(WORDS) for _ in range(rnd.randint(4, 12)))
        out += b'\n'
    return bytes(out[:n])


def data_extents(path):
    """``[(offset, length)]`` of the file's data (SEEK_DATA/SEEK_HOLE)."""
    size = os.path.getsize(path)
    fd = os.open(path, os.O_RDONLY)
    extents = []
    try:
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:     # ENXIO: only a hole remains
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            extents.append((start, end - start))
            offset = end
    except (AttributeError, OSError):
        return [(0, size)]
    finally:
        os.close(fd)
    return extents


def sparse_copy(src, dst):
    """Copy ``src`` to ``dst`` keeping its holes."""
    size = os.path.getsize(src)
    with open(src, 'rb') as fin, open(dst, 'wb') as fout:
        fout.truncate(size)
        for offset, length in data_extents(src):
            fin.seek(offset)
            fout.seek(offset)
            left = length
            while left:
                data = fin.read(min(left, 8 * MiB))
                if not data:
                    break
                fout.write(data)
                left -= len(data)


def make_changed_copy(src, dst, fraction=0.05):
    """Copy ``src`` with ``fraction`` of its 32 KiB data blocks rewritten.

    On a sparse volume the blocks are chosen among its data extents, so
    the copy stays as sparse as the original.  Returns the bytes
    rewritten.
    """
    sparse_copy(src, dst)
    blocks = [off // BLOCK + i
              for off, length in data_extents(src)
              for i in range(length // BLOCK)]
    rnd = random.Random(7)
    chosen = rnd.sample(blocks, max(1, int(len(blocks) * fraction)))
    with open(dst, 'r+b') as f:
        for idx in sorted(chosen):
            f.seek(idx * BLOCK)
            f.write(rnd.randbytes(BLOCK))
    return len(chosen) * BLOCK


def same_file(a, b):
    return subprocess.run(['cmp', '-s', a, b]).returncode == 0
