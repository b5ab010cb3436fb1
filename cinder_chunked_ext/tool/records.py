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

"""Backup records that live nowhere: no database behind them.

The engine reads a record's fields, saves it and re-reads its status.
A record made for one operation (restored straight from a repository,
or while the catalog cannot be written) has nothing to save to.
"""

import contextlib


class DetachedRecord(object):
    """The record interface the engine uses, for records never saved.

    Subclasses set the fields as attributes; ``save`` and ``refresh`` do
    nothing (there is nothing to write to or re-read from).
    """

    def __getitem__(self, key):
        return getattr(self, key)

    def save(self):
        return None

    def refresh(self):
        return None

    @contextlib.contextmanager
    def as_read_deleted(self):
        yield self
