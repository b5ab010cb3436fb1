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

"""Backups as objects in OpenStack Swift: a drop-in for Cinder's driver.

``cinder.conf`` (one service account, tempauth)::

    [DEFAULT]
    backup_driver = cinder_chunked_ext.drivers.swift.SwiftBackupDriver
    backup_swift_auth = single_user
    backup_swift_auth_version = 1
    backup_swift_auth_url = http://swift.example.org:8080/auth/v1.0
    backup_swift_user = backup:cinder
    backup_swift_key = ...

Upstream's options keep their names, defaults and meaning (per_user uses
the request's token; single_user the configured credentials, tempauth or
Keystone v2/v3), and objects are laid out as upstream lays them out
(container ``backup_swift_container`` unless the backup names one;
prefix ``volume_<volume id>/<UTC timestamp>/az_<zone>_backup_<backup
id>``), so either driver restores what the other wrote.  Our own options
live in ``[chunked_backup]`` and start with ``swift_``.
"""

from oslo_config import cfg
from oslo_log import log as logging

from cinder_chunked_ext import cinder_compat
from cinder_chunked_ext.drivers import base
from cinder_chunked_ext.drivers import swift_auth
from cinder_chunked_ext.engine import driver as chunked
from cinder_chunked_ext import exception
from cinder_chunked_ext.store import swift as swift_store

LOG = logging.getLogger(__name__)

#: Upstream's options, same names, types and defaults, in [DEFAULT].
swiftbackup_service_opts = [
    cfg.URIOpt('backup_swift_url',
               help='The storage URL of Swift up to the project id, for '
                    'example ``http://swift.example.org:8080/v1/AUTH_``; '
                    'in per_user mode the project id of the request is '
                    'appended. When unset, the service catalog is used.'),
    cfg.URIOpt('backup_swift_auth_url',
               help='The authentication URL for single_user mode: '
                    'tempauth (for example .../auth/v1.0) or Keystone. '
                    'When unset, the service catalog is used.'),
    cfg.StrOpt('swift_catalog_info',
               default='object-store:swift:publicURL',
               help='How to find Swift in the service catalog, as '
                    '<service_type>:<service_name>:<endpoint_type>. Used '
                    'only when backup_swift_url is unset.'),
    cfg.StrOpt('keystone_catalog_info',
               default='identity:Identity Service:publicURL',
               help='How to find Keystone in the service catalog, as '
                    '<service_type>:<service_name>:<endpoint_type>. Used '
                    'only when backup_swift_auth_url is unset.'),
    cfg.StrOpt('backup_swift_auth',
               default='per_user',
               choices=['per_user', 'single_user'],
               help='How to authenticate to Swift: per_user uses the token '
                    'of the user who asked for the backup, single_user the '
                    'configured backup_swift_user and backup_swift_key.'),
    cfg.StrOpt('backup_swift_auth_version',
               default='1',
               help='The authentication version for single_user mode: 1 '
                    '(tempauth or swauth), 2 (Keystone v2.0) or 3 '
                    '(Keystone v3).'),
    cfg.StrOpt('backup_swift_tenant',
               help='The tenant (project) name for Keystone v2.0 '
                    'authentication.'),
    cfg.StrOpt('backup_swift_user_domain',
               default=None,
               help='The domain name of backup_swift_user for Keystone v3 '
                    'authentication.'),
    cfg.StrOpt('backup_swift_project_domain',
               default=None,
               help='The domain name of backup_swift_project for Keystone '
                    'v3 authentication.'),
    cfg.StrOpt('backup_swift_project',
               default=None,
               help='The project name for Keystone v3 authentication.'),
    cfg.StrOpt('backup_swift_user',
               help='The user name for single_user mode.'),
    cfg.StrOpt('backup_swift_key',
               secret=True,
               help='The key or password of backup_swift_user.'),
    cfg.StrOpt('backup_swift_container',
               default='volumebackups',
               help='The container that holds the backups when a backup '
                    'names no container of its own.'),
    cfg.StrOpt('backup_swift_create_storage_policy',
               default=None,
               help='The storage policy given to containers the driver '
                    'creates; a container that already exists keeps its '
                    'own policy.'),
    cfg.IntOpt('backup_swift_object_size',
               default=52428800,
               help='The size, in bytes, of the volume data each backup '
                    'object holds; a multiple of backup_swift_block_size.'),
    cfg.IntOpt('backup_swift_block_size',
               default=32768,
               help='The size, in bytes, of the blocks whose changes '
                    'incremental backups track; backup_swift_object_size '
                    'must be a multiple of it.'),
    cfg.IntOpt('backup_swift_retry_attempts',
               default=3,
               help='The number of times a failed Swift request is '
                    'retried (connection errors, timeouts, 5xx answers).'),
    cfg.IntOpt('backup_swift_retry_backoff',
               default=2,
               help='The wait, in seconds, before the first retry of a '
                    'Swift request; it doubles with each further retry.'),
    cfg.BoolOpt('backup_swift_enable_progress_timer',
                default=True,
                help='Send periodic progress notifications while a volume '
                     'is backed up to Swift.'),
    cfg.StrOpt('backup_swift_ca_cert_file',
               help='The CA bundle file used to verify the certificates '
                    'of Swift and Keystone; the system bundle when unset.'),
    cfg.BoolOpt('backup_swift_auth_insecure',
                default=False,
                help='Do not verify the TLS certificates of Swift and '
                     'Keystone. Use only for testing.'),
    cfg.BoolOpt('backup_swift_service_auth',
                default=False,
                help='Send an X-Service-Token header with the token of '
                     "Cinder's service user; [service_user] must be "
                     'configured and send_service_user_token enabled.'),
    cfg.StrOpt('backup_swift_region_name',
               help='The region whose endpoints are used when the service '
                    'catalog lists Swift or Keystone in several regions.'),
]

#: Our additions, in [chunked_backup].
swift_chunked_opts = [
    cfg.IntOpt('swift_max_concurrent_uploads',
               default=4,
               min=1,
               help='The largest number of objects a backup uploads to '
                    'Swift at the same time. Each holds up to '
                    'backup_swift_object_size bytes in memory until it is '
                    'sent, so fewer are used when max_bytes_in_flight '
                    'would not hold them.'),
    cfg.FloatOpt('swift_timeout',
                 default=120,
                 min=0,
                 help='The time, in seconds, to wait for Swift (or '
                      'Keystone) to accept a connection or to send the '
                      'next bytes of an answer before the request counts '
                      'as failed and is retried; 0 waits for ever, as '
                      "upstream's driver does."),
    cfg.IntOpt('swift_listing_page_size',
               default=0,
               min=0,
               help='The number of names asked for per container listing '
                    "request; 0 uses the server's page size "
                    '(container_listing_limit, 10000 by default).'),
]

CHUNKED_GROUP = chunked.PIPELINE_GROUP

CONF = cfg.CONF
CONF.register_opts(cinder_compat.same_as_upstream(
    swiftbackup_service_opts, 'cinder.backup.drivers.swift',
    'swiftbackup_service_opts'))
CONF.register_opts(swift_chunked_opts, group=CHUNKED_GROUP)


def _has_user(context):
    """True for a request's context (upstream initialises only then)."""
    return bool(getattr(context, 'user_id', None) or
                getattr(context, 'chunked_environment', None) is not None)


def concurrent_uploads(conf=CONF):
    """Uploads at once: as configured, within the engine's memory bound."""
    group = conf[CHUNKED_GROUP]
    fits = group.max_bytes_in_flight // max(1, conf.backup_swift_object_size)
    return max(1, min(group.swift_max_concurrent_uploads, fits))


def settings_from_conf(context, conf=CONF):
    """The store's settings, read once from configuration and context."""
    problem = None
    if (getattr(context, 'chunked_environment', None) is not None and
            not getattr(context, 'auth_token', None) and
            conf.backup_swift_auth != 'single_user'):
        raise exception.StoreConfigurationError(
            reason="per_user authentication uses the token of a user's "
                   'request, which the standalone tool does not have: '
                   'set backup_swift_auth = single_user and the '
                   'backup_swift_auth_url, backup_swift_user and '
                   'backup_swift_key of the account')
    try:
        account = swift_auth.account_settings(conf, context)
        swift_auth.check_per_user_settings(conf, account)
    except exception.StoreConfigurationError as e:
        if _has_user(context):
            raise
        # The service's own start-up context: no catalog, no token.
        account = {}
        problem = e.kwargs.get('reason') or str(e)
    headers_provider = (cinder_compat.service_token_headers
                        if conf.backup_swift_service_auth else None)
    group = conf[CHUNKED_GROUP]
    return swift_store.SwiftSettings(
        retries=conf.backup_swift_retry_attempts,
        backoff=conf.backup_swift_retry_backoff,
        insecure=conf.backup_swift_auth_insecure,
        ca_cert_file=conf.backup_swift_ca_cert_file,
        storage_policy=conf.backup_swift_create_storage_policy,
        container=conf.backup_swift_container,
        max_concurrent_uploads=concurrent_uploads(conf),
        listing_page_size=group.swift_listing_page_size or None,
        timeout=group.swift_timeout or None,
        headers_provider=headers_provider,
        problem=problem,
        **account)


class SwiftBackupDriver(base.StoreBackedDriver):
    """Backup, restore and delete using OpenStack Swift."""

    def __init__(self, context):
        super().__init__(
            context,
            swift_store.SwiftStore(settings_from_conf(context)),
            CONF.backup_swift_object_size,
            CONF.backup_swift_block_size,
            CONF.backup_swift_container,
            CONF.backup_swift_enable_progress_timer,
        )

    @staticmethod
    def get_driver_options():
        """[DEFAULT] options, as upstream lists them."""
        return swiftbackup_service_opts

    @staticmethod
    def get_extra_options():
        """This package's own options, in [chunked_backup]."""
        return swift_chunked_opts

    def _generate_object_name_prefix(self, backup):
        prefix = 'volume_%s/%s/az_%s_backup_%s' % (
            backup['volume_id'], chunked.utcnow_stamp(), self.az,
            backup['id'])
        LOG.debug('_generate_object_name_prefix: %s', prefix)
        return prefix

    def update_container_name(self, backup, container):
        """The container is used as given."""
        return container

    def get_extra_metadata(self, backup, volume):
        return None

    def check_for_setup_error(self):
        """Reach the account when one is known, as upstream can.

        At service start-up in per_user mode there is no user's token:
        like upstream, only ``backup_swift_url``'s ``/info`` is asked
        for, when it is set.
        """
        self.check_restore_spool()
        settings = self.store.settings
        if CONF.backup_swift_auth == 'single_user' or (
                settings.describes_account and not settings.problem):
            self.store.check()
            return
        if not CONF.backup_swift_url:
            LOG.warning('backup_swift_url is not set: the Swift endpoint '
                        "will be taken from each request's service "
                        'catalog.')
            return
        self.store.check_info(CONF.backup_swift_url)
