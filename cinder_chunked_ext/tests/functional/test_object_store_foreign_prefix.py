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

"""S3 and Swift: a delete by an empty or foreign prefix is refused.

A real backup on the local S3 (SeaweedFS) or Swift server; a second
record in the same bucket or container whose prefix is empty, the
volume's part of the real backup's prefix (a strict prefix of it), or
the real backup's prefix.  Deleting that record must fail and leave
every object of the real backup, which still restores.
"""

import ddt

from cinder_chunked_ext import exception
from cinder_chunked_ext.tests.functional import test_s3_driver
from cinder_chunked_ext.tests.functional import test_swift_driver

KINDS = ('empty', 'volume_part', 'other_backup')


def _prefix(kind, real):
    return {'empty': '',
            'volume_part': real.service_metadata.split('/')[0] + '/',
            'other_backup': real.service_metadata}[kind]


class _Refusal(object):

    def listed(self, backup):
        raise NotImplementedError

    def check_refused(self, kind):
        data = test_s3_driver.random_blocks(5)
        real = self.backup(data)
        victim = self.env.new_backup(container=real.container,
                                     status='deleting')
        victim.service_metadata = _prefix(kind, real)
        before = sorted(self.listed(real))
        self.assertEqual(4, len(before))   # two data objects

        error = self.assertRaises(exception.UnsafePrefix,
                                  self.driver().delete_backup, victim)

        self.assertIn('nothing was deleted', str(error))
        self.assertEqual(before, sorted(self.listed(real)))
        self.assertEqual(data, self.restore(real, len(data)))


@ddt.ddt
class S3ForeignPrefixTestCase(_Refusal, test_s3_driver.S3DriverTestCase):

    def listed(self, backup):
        return self.keys(backup.service_metadata, bucket=backup.container)

    @ddt.data(*KINDS)
    def test_delete_backup_foreign_prefix_refused_objects_kept(self, kind):
        self.check_refused(kind)


@ddt.ddt
class SwiftForeignPrefixTestCase(_Refusal,
                                 test_swift_driver.SwiftDriverTestCase):

    def listed(self, backup):
        return self.names(backup.service_metadata, backup.container)

    @ddt.data(*KINDS)
    def test_delete_backup_foreign_prefix_refused_objects_kept(self, kind):
        self.check_refused(kind)
