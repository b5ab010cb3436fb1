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

"""The standalone tool, ``cinder-chunked-backup``.

It drives the same drivers as cinder-backup without a running Cinder:
``cli`` parses the command line, ``session`` loads configuration and a
driver, ``repository`` checks that the repository a run reads is
there (only ``backup create`` makes one) and keeps its directories
tidy, ``operations`` backs up and restores volume files, ``catalog``
is the SQLite record of backups, ``verify`` checks backups without
restoring them, ``recovery`` finds backups in a repository when no
catalog survives, ``progress`` and ``exit_status`` are what the tool
prints and returns, and ``demo`` is the self-contained demonstration.
Cinder never loads this package.
"""
