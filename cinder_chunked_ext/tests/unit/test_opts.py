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

"""The option list, the entry points and the checked-in sample config."""

import os
import tempfile
from unittest import mock

from oslo_config import cfg
from oslo_config import generator
import stevedore
import testtools

from cinder_chunked_ext import opts

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))))
SAMPLE = os.path.join(ROOT, 'etc', 'cinder_chunked_ext',
                      'cinder_chunked_ext.conf.sample')

DEFAULT_OPTIONS = {
    # Engine (upstream's chunked driver and base driver).
    'backup_compression_algorithm', 'backup_create_containers',
    'backup_metadata_version', 'backup_object_number_per_notification',
    'backup_timer_interval',
    # POSIX.
    'backup_file_size', 'backup_sha_block_size_bytes',
    'backup_enable_progress_timer', 'backup_posix_path', 'backup_container',
    # NFS.
    'backup_mount_point_base', 'backup_share', 'backup_mount_options',
    'backup_mount_attempts',
    # S3.
    'backup_s3_endpoint_url', 'backup_s3_store_access_key',
    'backup_s3_store_secret_key', 'backup_s3_store_bucket',
    'backup_s3_object_size', 'backup_s3_block_size',
    'backup_s3_enable_progress_timer', 'backup_s3_http_proxy',
    'backup_s3_https_proxy', 'backup_s3_timeout',
    'backup_s3_max_pool_connections', 'backup_s3_retry_max_attempts',
    'backup_s3_retry_mode', 'backup_s3_verify_ssl', 'backup_s3_ca_cert_file',
    'backup_s3_md5_validation', 'backup_s3_sse_customer_key',
    'backup_s3_sse_customer_algorithm',
    # Swift (every option of cinder 29.0.0's Swift driver).
    'backup_swift_url', 'backup_swift_auth_url', 'swift_catalog_info',
    'keystone_catalog_info', 'backup_swift_auth', 'backup_swift_auth_version',
    'backup_swift_tenant', 'backup_swift_user_domain',
    'backup_swift_project_domain', 'backup_swift_project',
    'backup_swift_user', 'backup_swift_key', 'backup_swift_container',
    'backup_swift_create_storage_policy', 'backup_swift_object_size',
    'backup_swift_block_size', 'backup_swift_retry_attempts',
    'backup_swift_retry_backoff', 'backup_swift_enable_progress_timer',
    'backup_swift_ca_cert_file', 'backup_swift_auth_insecure',
    'backup_swift_service_auth', 'backup_swift_region_name',
}


def generate_sample(path):
    conf = cfg.ConfigOpts()
    generator.register_cli_opts(conf)
    conf(['--namespace', 'cinder_chunked_ext', '--wrap-width', '79',
          '--output-file', path], project='cinder_chunked_ext')
    loaders = [('cinder_chunked_ext', opts.list_opts)]
    with mock.patch.object(generator, '_get_raw_opts_loaders',
                           return_value=loaders):
        generator.generate(conf)


class ListOptsTestCase(testtools.TestCase):

    def test_list_opts_default_group_upstream_names(self):
        groups = dict(opts.list_opts())
        names = {opt.dest for opt in groups['DEFAULT']}
        self.assertEqual(DEFAULT_OPTIONS, names)

    def test_list_opts_own_group_holds_only_our_additions(self):
        groups = dict(opts.list_opts())
        names = {opt.dest for opt in groups['chunked_backup']}
        self.assertIn('workers', names)
        self.assertIn('max_bytes_in_flight', names)
        self.assertIn('verify_checksums_on_restore', names)
        self.assertFalse(names & DEFAULT_OPTIONS)

    def test_list_opts_secrets_marked_secret(self):
        groups = dict(opts.list_opts())
        secret = {opt.dest for opts_ in groups.values() for opt in opts_
                  if opt.secret}
        self.assertEqual({'backup_s3_store_access_key',
                          'backup_s3_store_secret_key',
                          'backup_s3_sse_customer_key',
                          'backup_swift_key'}, secret)

    def test_list_opts_every_option_has_help(self):
        for _group, options in opts.list_opts():
            for opt in options:
                self.assertTrue(opt.help, opt.dest)

    def test_driver_classes_sorted_and_complete(self):
        names = [name for name, _cls in opts.driver_classes()]
        self.assertEqual(['nfs', 'posix', 's3', 'swift'], names)

    def test_entry_points_name_our_drivers(self):
        manager = stevedore.ExtensionManager(opts.DRIVER_NAMESPACE,
                                             invoke_on_load=False)
        if not manager.names():
            self.skipTest('the package is not installed (no entry points)')
        self.assertEqual(['nfs', 'posix', 's3', 'swift'],
                         sorted(manager.names()))
        self.assertEqual(dict(opts.driver_classes()),
                         {ext.name: ext.plugin for ext in manager})


class SampleConfigTestCase(testtools.TestCase):

    def test_sample_config_matches_generated(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, 'sample.conf')
            generate_sample(path)
            with open(path) as f:
                generated = f.read()
        with open(SAMPLE) as f:
            checked_in = f.read()
        self.assertEqual(
            checked_in, generated,
            'etc/cinder_chunked_ext/cinder_chunked_ext.conf.sample is '
            'stale: run "tox -e genconfig"')
