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

"""The stored form of an object held whole in memory.

A small object (an incremental's changed run, a full backup's object
next to a hole) is analysed and encoded piece by piece, exactly as a
streamed object is, so that its stored bytes are the same whichever
path made them.
"""

import dataclasses
import hashlib
import typing

from cinder_chunked_ext.engine import compression
from cinder_chunked_ext.engine import pipeline


@dataclasses.dataclass
class Encoded:
    #: The stored bytes, in parts (joined, they would be one more copy).
    parts: list
    #: ``none`` or the codec the parts are compressed with.
    stored_as: str
    md5: str
    #: The block hashes of the data, when asked for.
    hashes: typing.Optional[list]


def encode(data, algorithm, piece_bytes, block_size, want_hashes,
           zero=None):
    """Analyse and encode ``data``; stored raw unless compression saves.

    ``zero``: True when the caller already knows ``data`` is all zeros.
    """
    view = memoryview(data)
    piece_encoder = compression.parallel_piece_encoder(algorithm)
    results = [pipeline.analyse_piece(view[start:start + piece_bytes],
                                      block_size, piece_encoder,
                                      want_hashes, zero=zero)
               for start in range(0, len(data), piece_bytes)]
    all_zero = all(result.zero for result in results)
    md5 = (pipeline.zero_md5(len(data)) if all_zero
           else hashlib.md5(data, usedforsecurity=False).hexdigest())
    hashes = None
    if want_hashes:
        hashes = [sha for result in results for sha in result.hashes]
    encoded = Encoded(parts=[data], stored_as='none', md5=md5, hashes=hashes)
    with compression.one_go_encoder(algorithm, len(data)) as encoder:
        if encoder is None:
            return encoded
        parts = ([encoder.start()] +
                 [encoder.feed(result.data, result.encoded, result.zero)
                  for result in results] +
                 [encoder.finish()])
    if sum(len(part) for part in parts) < len(data):
        encoded.parts, encoded.stored_as = parts, algorithm
    return encoded
