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

"""Client-side encryption of backups (``[chunked_backup] encryption``).

* :mod:`.documents`: the JSON envelope that seals a backup's
  ``_metadata`` and ``_sha256file`` documents;
* :mod:`.keys`: where data keys come from and go to (castellan's key
  manager, or a password for the standalone tool);
* :mod:`.backups`: what the driver does with them: a key per backup,
  held for the objects of its prefix while an operation runs.

The data objects themselves are sealed by
:class:`cinder_chunked_ext.store.sealed.SealedStore`.
"""
