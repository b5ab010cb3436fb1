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

"""Backups as objects in an S3 bucket: a drop-in for Cinder's S3 driver.

``cinder.conf``::

    [DEFAULT]
    backup_driver = cinder_chunked_ext.drivers.s3.S3BackupDriver
    backup_s3_endpoint_url = https://s3.example.com
    backup_s3_store_access_key = ...
    backup_s3_store_secret_key = ...
    backup_s3_store_bucket = volumebackups

Upstream's options keep their names, defaults and meaning, and objects
are laid out as upstream lays them out (the bucket is the container;
``volume_<volume id>/<UTC timestamp>/az_<zone>_backup_<backup id>`` is the
prefix), so either driver restores what the other wrote.  Our own options
live in ``[chunked_backup]`` and start with ``s3_``.
"""

from oslo_config import cfg
from oslo_log import log as logging

from cinder_chunked_ext import cinder_compat
from cinder_chunked_ext.drivers import base
from cinder_chunked_ext.engine import driver as chunked
from cinder_chunked_ext.store import s3 as s3_store

LOG = logging.getLogger(__name__)

MiB = 1024 ** 2

#: Upstream's options, same names and defaults, in [DEFAULT].
s3backup_service_opts = [
    cfg.StrOpt('backup_s3_endpoint_url',
               help='The URL of the S3 server, for example '
                    'https://s3.example.com:8080.'),
    cfg.StrOpt('backup_s3_store_access_key', secret=True,
               help='The access key of the S3 user that stores the '
                    'backups.'),
    cfg.StrOpt('backup_s3_store_secret_key', secret=True,
               help='The secret key of the S3 user that stores the '
                    'backups.'),
    cfg.StrOpt('backup_s3_store_bucket', default='volumebackups',
               help='The bucket that holds the backups when a backup '
                    'names no container of its own.'),
    cfg.IntOpt('backup_s3_object_size', default=52428800,
               help='The size, in bytes, of the volume data each backup '
                    'object holds; a multiple of backup_s3_block_size.'),
    cfg.IntOpt('backup_s3_block_size', default=32768,
               help='The size, in bytes, of the blocks whose changes '
                    'incremental backups track; backup_s3_object_size '
                    'must be a multiple of it.'),
    cfg.BoolOpt('backup_s3_enable_progress_timer', default=True,
                help='Send periodic progress notifications while a volume '
                     'is backed up to S3.'),
    cfg.StrOpt('backup_s3_http_proxy', default='',
               help='The proxy, as host:port or URL, for requests to an '
                    'http endpoint.'),
    cfg.StrOpt('backup_s3_https_proxy', default='',
               help='The proxy, as host:port or URL, for requests to an '
                    'https endpoint.'),
    cfg.FloatOpt('backup_s3_timeout', default=60,
                 help='The time, in seconds, to wait for a connection or '
                      'an answer from the S3 server.'),
    cfg.IntOpt('backup_s3_max_pool_connections', default=10,
               help='The largest number of connections to the S3 server '
                    'kept open for reuse.'),
    cfg.IntOpt('backup_s3_retry_max_attempts', default=4,
               help='The number of times botocore retries a failed '
                    'request, and the number of times a broken download '
                    'is resumed.'),
    cfg.StrOpt('backup_s3_retry_mode', default='legacy',
               help='The botocore retry mode: legacy, standard or '
                    'adaptive.'),
    cfg.BoolOpt('backup_s3_verify_ssl', default=True,
                help='Verify the TLS certificate of an https endpoint.'),
    cfg.StrOpt('backup_s3_ca_cert_file', default=None,
               help='The CA bundle file used to verify the endpoint '
                    'certificate; the system bundle when unset.'),
    cfg.BoolOpt('backup_s3_md5_validation', default=True,
                help='Send the MD5 of every upload as Content-MD5 so the '
                     'server rejects data altered in transit.'),
    cfg.StrOpt('backup_s3_sse_customer_key', default=None, secret=True,
               help='The key for server-side encryption with a customer '
                    'key (SSE-C); backup_s3_sse_customer_algorithm must '
                    'be set too.'),
    cfg.StrOpt('backup_s3_sse_customer_algorithm', default=None,
               help='The algorithm for server-side encryption with a '
                    'customer key (SSE-C), for example AES256; '
                    'backup_s3_sse_customer_key must be set too.'),
]

#: Our additions, in [chunked_backup].
s3_chunked_opts = [
    cfg.StrOpt('s3_addressing_style',
               default='path',
               choices=s3_store.ADDRESSING_STYLES,
               help='How bucket names go into request URLs: path '
                    '(http://host/bucket/key, what most S3-compatible '
                    'servers expect), virtual (http://bucket.host/key) or '
                    'auto (botocore decides).'),
    cfg.StrOpt('s3_request_checksum',
               default='when_required',
               choices=s3_store.CHECKSUM_MODES,
               help='When botocore adds and checks the CRC checksums newer '
                    'S3 versions support: when_required works with servers '
                    'that do not know them, when_supported always sends '
                    'them.'),
    cfg.IntOpt('s3_multipart_threshold',
               default=64 * MiB,
               min=0,
               help='The size, in bytes, above which an object is sent as '
                    'a multipart upload instead of one PUT; a writer holds '
                    'at most this much, or one part, in memory.'),
    cfg.IntOpt('s3_multipart_part_size',
               default=16 * MiB,
               min=s3_store.MIN_PART_SIZE,
               max=s3_store.MAX_PART_SIZE,
               help='The size, in bytes, of the parts of a multipart '
                    'upload; raised when needed so an object fits in '
                    '10000 parts.'),
    cfg.IntOpt('s3_max_concurrent_uploads',
               default=4,
               min=1,
               help='The number of objects a backup uploads at the same '
                    'time, each holding up to s3_multipart_threshold bytes '
                    '(or one part) in memory until it is sent; the '
                    'connection pool is enlarged to match.'),
]

CHUNKED_GROUP = chunked.PIPELINE_GROUP

CONF = cfg.CONF
CONF.register_opts(cinder_compat.same_as_upstream(
    s3backup_service_opts, 'cinder.backup.drivers.s3',
    's3backup_service_opts'))
CONF.register_opts(s3_chunked_opts, group=CHUNKED_GROUP)


def settings_from_conf(conf=CONF):
    """The store's settings, read once from configuration."""
    group = conf[CHUNKED_GROUP]
    return s3_store.S3Settings(
        endpoint_url=conf.backup_s3_endpoint_url,
        access_key=conf.backup_s3_store_access_key,
        secret_key=conf.backup_s3_store_secret_key,
        bucket=conf.backup_s3_store_bucket,
        timeout=conf.backup_s3_timeout,
        max_pool_connections=conf.backup_s3_max_pool_connections,
        retry_max_attempts=conf.backup_s3_retry_max_attempts,
        retry_mode=conf.backup_s3_retry_mode,
        verify_ssl=conf.backup_s3_verify_ssl,
        ca_cert_file=conf.backup_s3_ca_cert_file,
        http_proxy=conf.backup_s3_http_proxy,
        https_proxy=conf.backup_s3_https_proxy,
        md5_validation=conf.backup_s3_md5_validation,
        sse_customer_key=conf.backup_s3_sse_customer_key,
        sse_customer_algorithm=conf.backup_s3_sse_customer_algorithm,
        addressing_style=group.s3_addressing_style,
        request_checksum=group.s3_request_checksum,
        multipart_threshold=group.s3_multipart_threshold,
        multipart_part_size=group.s3_multipart_part_size,
        max_concurrent_uploads=group.s3_max_concurrent_uploads,
        expected_object_size=conf.backup_s3_object_size,
    )


class S3BackupDriver(base.StoreBackedDriver):
    """Backup, restore and delete using an S3-compatible object store."""

    def __init__(self, context):
        super().__init__(
            context,
            s3_store.S3Store(settings_from_conf()),
            CONF.backup_s3_object_size,
            CONF.backup_s3_block_size,
            CONF.backup_s3_store_bucket,
            CONF.backup_s3_enable_progress_timer,
        )

    @staticmethod
    def get_driver_options():
        """[DEFAULT] options, as upstream lists them (with compression)."""
        compression = [CONF._opts['backup_compression_algorithm']['opt']]
        return s3backup_service_opts + compression

    @staticmethod
    def get_extra_options():
        """This package's own options, in [chunked_backup]."""
        return s3_chunked_opts

    def _generate_object_name_prefix(self, backup):
        prefix = 'volume_%s/%s/az_%s_backup_%s' % (
            backup.volume_id, chunked.utcnow_stamp(), self.az, backup.id)
        LOG.debug('_generate_object_name_prefix: %s', prefix)
        return prefix

    def update_container_name(self, backup, container):
        """The bucket is used as given."""
        return None

    def get_extra_metadata(self, backup, volume):
        return None
