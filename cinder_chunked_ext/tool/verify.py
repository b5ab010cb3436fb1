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

"""Check a backup chain against its own checksums, without restoring it.

Every object of every backup of the chain is read back from the store
and decoded; the engine checks its length and the MD5 recorded at backup
time, and here each hash block of the data is compared with the SHA-256
that the backup's ``_sha256file`` records at the same block index.  Then:

* the objects in the store must be exactly those the metadata lists
  (a missing or an unexpected object is reported by name);
* in a full backup every hash block must be covered by an object;
* in an incremental backup a block no object covers must have the same
  hash as in the parent's ``_sha256file`` (it is restored from there).

Together these prove that restoring the backup would rebuild a volume
whose blocks hash to the backup's ``_sha256file``.  A problem with one
object does not stop the check: every bad object is reported.
"""

import dataclasses
import typing

from cinder_chunked_ext import cinder_compat
from cinder_chunked_ext.engine import objects
from cinder_chunked_ext.engine import pipeline
from cinder_chunked_ext import exception


@dataclasses.dataclass
class Problem:
    """Something wrong with one backup (and one object, when known)."""

    backup_id: str
    object_name: typing.Optional[str]
    reason: str

    def to_json(self):
        return {'backup_id': self.backup_id, 'object': self.object_name,
                'problem': self.reason}

    def __str__(self):
        where = 'backup %s' % self.backup_id
        if self.object_name:
            where += ' object %s' % self.object_name
        return '%s: %s' % (where, self.reason)


@dataclasses.dataclass
class LayerResult:
    """What checking one backup (one layer of a chain) found."""

    backup_id: str
    objects_checked: int = 0
    bytes_checked: int = 0
    problems: typing.List[Problem] = dataclasses.field(default_factory=list)
    block_size: typing.Optional[int] = None
    hashes: typing.Optional[typing.List[str]] = None

    def problem(self, object_name, reason):
        self.problems.append(Problem(self.backup_id, object_name,
                                     str(reason)))


@dataclasses.dataclass
class Report:
    """The result of verifying one backup and the chain below it."""

    backup_id: str
    chain: typing.List[str] = dataclasses.field(default_factory=list)
    objects_checked: int = 0
    bytes_checked: int = 0
    problems: typing.List[Problem] = dataclasses.field(default_factory=list)

    @property
    def ok(self):
        return not self.problems

    def to_json(self):
        return {'backup_id': self.backup_id, 'ok': self.ok,
                'chain': list(self.chain),
                'objects_checked': self.objects_checked,
                'bytes_checked': self.bytes_checked,
                'problems': [p.to_json() for p in self.problems]}


# Errors that mean "this part of the repository is bad"; anything else
# (a bug, an interrupt) propagates.
_REPOSITORY_ERRORS = (cinder_compat.CinderException, OSError)


class Verifier(object):
    """Verifies backups through a driver; shares work across a run.

    :param driver: a chunked driver whose context carries the environment
        the backups' records come from.
    :param on_bytes: called with the number of bytes of each decoded
        piece, for progress reporting.
    """

    def __init__(self, driver, on_bytes=None):
        self.driver = driver
        self.on_bytes = on_bytes or (lambda n: None)
        # The MD5 check is the point of verifying: never skip it.
        settings = driver.settings
        if not settings.verify_checksums:
            driver.settings = dataclasses.replace(settings,
                                                  verify_checksums=True)
        self._layers = {}
        self._metadata = {}

    def _read_metadata(self, layer):
        if layer['id'] not in self._metadata:
            self._metadata[layer['id']] = self.driver._read_metadata(layer)
        return self._metadata[layer['id']]

    def chain(self, backup):
        """``[backup, parent, ..., full]`` (raises on a broken chain)."""
        return objects.backup_chain(self.driver.env, backup)

    def planned_bytes(self, backup):
        """Bytes of data a verification of ``backup`` will read (approx.)."""
        total = 0
        try:
            for layer in self.chain(backup):
                if layer['id'] in self._layers:
                    continue
                metadata = self._read_metadata(layer)
                total += sum(obj.length for obj in metadata.objects)
        except _REPOSITORY_ERRORS:
            pass    # verify() reports it
        return total

    def verify(self, backup):
        """A :class:`Report` on ``backup`` and every backup it needs."""
        report = Report(backup_id=backup['id'])
        try:
            chain = self.chain(backup)
        except _REPOSITORY_ERRORS as e:
            report.problems.append(Problem(backup['id'], None,
                                           'broken chain: %s' % e))
            return report
        report.chain = [layer['id'] for layer in chain]
        parent = None
        for layer in reversed(chain):
            result = self._layers.get(layer['id'])
            if result is None:
                result = self._check_layer(layer, parent)
                self._layers[layer['id']] = result
            report.objects_checked += result.objects_checked
            report.bytes_checked += result.bytes_checked
            report.problems.extend(result.problems)
            parent = result
        return report

    # -- one backup ----------------------------------------------------

    def _check_layer(self, layer, parent):
        driver = self.driver
        result = LayerResult(backup_id=layer['id'])
        try:
            metadata = self._read_metadata(layer)
        except _REPOSITORY_ERRORS as e:
            result.problem(driver._metadata_filename(layer), e)
            return result
        try:
            shafile = driver._read_sha256file(layer)
            result.block_size = shafile.chunk_size
            result.hashes = shafile.sha256s
        except _REPOSITORY_ERRORS as e:
            result.problem(driver._sha256_filename(layer), e)
        self._check_identity(layer, metadata, result)
        try:
            objects.check_placement(layer, metadata)
        except _REPOSITORY_ERRORS as e:
            result.problem(None, e)
        present = self._check_object_list(layer, metadata, result)
        covered = set()
        for obj in metadata.objects:
            if present is not None and obj.name not in present:
                continue
            self._check_object(layer, metadata, obj, result, covered)
        self._check_coverage(result, parent, covered)
        return result

    def _check_identity(self, layer, metadata, result):
        if metadata.backup_id != layer['id']:
            result.problem(self.driver._metadata_filename(layer),
                           'the metadata belongs to backup %s'
                           % metadata.backup_id)
        if (metadata.parent_id or None) != (layer['parent_id'] or None):
            result.problem(self.driver._metadata_filename(layer),
                           'the metadata names parent %s, the record %s'
                           % (metadata.parent_id, layer['parent_id']))

    def _check_object_list(self, layer, metadata, result):
        """The names present in the store, or None when it can't list."""
        try:
            missing, unexpected = objects.object_list_difference(
                self.driver, layer, metadata)
        except _REPOSITORY_ERRORS as e:
            result.problem(None, 'cannot list its objects: %s' % e)
            return None
        for name in missing:
            result.problem(name, 'missing from the repository')
        for name in unexpected:
            result.problem(name, 'in the repository but not in the metadata')
        return ({obj.name for obj in metadata.objects} - set(missing))

    def _check_object(self, layer, metadata, obj, result, covered):
        block = result.block_size
        hashes = result.hashes
        if block and obj.offset % block:
            result.problem(obj.name, 'offset %d is not a multiple of the '
                                     '%d-byte hash block' % (obj.offset,
                                                             block))
            block = None
        first = obj.offset // block if block else 0
        mismatched = []
        beyond = 0
        index = first
        carry = b''
        try:
            for data in objects.decoded_pieces(
                    self.driver, layer, layer['container'], obj,
                    metadata.extra_metadata):
                self.on_bytes(len(data))
                if not block:
                    continue
                if carry:
                    data = carry + data
                usable = len(data) - len(data) % block
                carry = data[usable:]
                for sha in pipeline.block_hashes(data[:usable], block):
                    if index >= len(hashes):
                        beyond += 1
                    elif hashes[index] != sha:
                        mismatched.append(index)
                    index += 1
            if block and carry:
                sha = pipeline.block_hashes(carry, block)[0]
                if index >= len(hashes):
                    beyond += 1
                elif hashes[index] != sha:
                    mismatched.append(index)
                index += 1
        except _REPOSITORY_ERRORS as e:
            result.problem(obj.name, _reason(e))
        else:
            result.objects_checked += 1
            result.bytes_checked += obj.length
        if block:
            # Only blocks the sha256file has: a hostile length must not
            # make the set as large as the length says.
            last = min(first + (obj.length + block - 1) // block,
                       len(hashes))
            covered.update(range(first, last))
        if mismatched:
            result.problem(obj.name, '%d hash block(s) do not match the '
                                     'sha256file (first: block %d at byte '
                                     '%d)' % (len(mismatched), mismatched[0],
                                              mismatched[0] * block))
        if beyond:
            result.problem(obj.name, 'its data reaches %d block(s) beyond '
                                     'the %d blocks of the sha256file'
                                     % (beyond, len(hashes)))

    def _check_coverage(self, result, parent, covered):
        if result.hashes is None:
            return
        hashes = result.hashes
        if parent is None:
            missing = [i for i in range(len(hashes)) if i not in covered]
            if missing:
                result.problem(None, '%d hash block(s) of a full backup are '
                                     'in no object (first: block %d)'
                                     % (len(missing), missing[0]))
            return
        if parent.hashes is None:
            return  # the parent's problem is already reported
        if parent.block_size != result.block_size:
            result.problem(None, 'hash block size %s differs from its '
                                 'parent\'s %s' % (result.block_size,
                                                   parent.block_size))
            return
        theirs = parent.hashes
        stale = [i for i in range(len(hashes)) if i not in covered and
                 (i >= len(theirs) or theirs[i] != hashes[i])]
        if stale:
            result.problem(None, '%d hash block(s) changed since backup %s '
                                 'but are in no object (first: block %d)'
                                 % (len(stale), parent.backup_id, stale[0]))


def _reason(error):
    """What to say about an object that did not pass, in few words."""
    kwargs = getattr(error, 'kwargs', None) or {}
    if isinstance(error, exception.ChecksumMismatch) and 'actual' in kwargs:
        return ('its data does not match its md5 (expected %s, got %s)'
                % (kwargs.get('expected'), kwargs.get('actual')))
    if isinstance(error, exception.CorruptBackup) and kwargs.get('reason'):
        return kwargs['reason']
    if isinstance(error, OSError):
        return 'cannot read it: %s' % (error.strerror or error)
    return str(error)
