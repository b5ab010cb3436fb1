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

"""The chunked backup engine: no Cinder import, no command line.

``driver`` holds :class:`ChunkedBackupDriver`, the class concrete drivers
extend (upstream's subclass interface); it hands a backup to ``backup``
and a restore to ``restore``, each a data path that reads top to bottom.
``objects`` checks stored objects (shared by restore and the tool's
verify), ``manifest`` parses and writes the repository's JSON documents,
``compression`` holds the codecs, ``pipeline`` the per-piece work,
``concurrency`` the worker pool and ordered lanes, ``volume_io`` reads and
writes of the volume, ``notifications`` the progress notifications and
``environment`` where records live (Cinder's database or a catalog).
"""
