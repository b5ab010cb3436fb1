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

"""Chunked backup drivers for OpenStack Cinder.

The package reads in layers: ``engine`` (the chunked format and its data
paths), ``store`` (where objects live: POSIX, S3, memory), ``drivers``
(what ``cinder-backup`` loads: the engine on a store, with its options)
and, beside them, ``tool`` (the standalone command).  ``cinder_compat``
is the only module that imports Cinder; ``opts`` lists the options for
the configuration generator and ``exception`` holds the errors.
"""
