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

"""Which Swift account a backup goes to, and with which credentials.

Upstream's two modes, decided from ``cinder.conf`` and the request
context, into :class:`~cinder_chunked_ext.store.swift.SwiftSettings`:

* ``per_user``: the request's token, on the storage URL
  ``backup_swift_url`` + the project id, or else the endpoint of
  ``swift_catalog_info`` in the request's service catalog;
* ``single_user``: the configured user and key, at
  ``backup_swift_auth_url`` or else the endpoint of
  ``keystone_catalog_info`` in the request's service catalog; auth
  version 1 is tempauth/swauth (the storage URL comes from the auth
  reply), versions 2 and 3 are Keystone through a keystoneauth1
  session (the storage URL comes from the token's catalog).
"""

import urllib.parse

from cinder_chunked_ext import exception

CHUNKED_GROUP = 'chunked_backup'
V1_VERSIONS = ('1', '1.0')
V2_VERSIONS = ('2', '2.0')
V3_VERSIONS = ('3', '3.0')


def _config_error(reason):
    return exception.StoreConfigurationError(reason=reason)


def parse_catalog_info(value, option):
    """``(service_type, service_name, endpoint_type)`` of ``option``."""
    parts = (value or '').split(':')
    if len(parts) != 3:
        raise _config_error(
            "Failed to parse the configuration option '%s', must be in "
            'the form <service_type>:<service_name>:<endpoint_type>'
            % option)
    return tuple(parts)


def catalog_endpoint(context, info, option, region_name=None):
    """The endpoint ``info`` names in the request's service catalog.

    As upstream: the first entry of the service type; within it, the
    endpoint of ``region_name`` when there is one, else the first.
    """
    service_type, _name, endpoint_type = parse_catalog_info(info, option)
    for entry in getattr(context, 'service_catalog', None) or ():
        if entry.get('type') != service_type:
            continue
        endpoints = entry.get('endpoints') or []
        if region_name:
            for endpoint in endpoints:
                if endpoint.get('region') == region_name:
                    return endpoint.get(endpoint_type)
        if endpoints:
            return endpoints[0].get(endpoint_type)
        return None
    return None


def _interface(endpoint_type):
    """keystoneauth's interface name for a catalog's endpoint type."""
    name = (endpoint_type or 'publicURL').lower()
    return name[:-3] if name.endswith('url') else name


def _versioned(auth_url, suffix):
    """``auth_url`` with ``/v3`` or ``/v2.0`` added when it has none."""
    path = urllib.parse.urlsplit(auth_url).path.rstrip('/')
    last = path.rsplit('/', 1)[-1]
    if last.startswith('v') and last[1:2].isdigit():
        return auth_url
    return auth_url.rstrip('/') + suffix


def keystone_session(conf, auth_url):
    """A keystoneauth1 session for the single_user Keystone account."""
    try:
        from keystoneauth1.identity import v2
        from keystoneauth1.identity import v3
        from keystoneauth1 import session as ks_session
    except ImportError:  # pragma: no cover - depends on the environment
        raise _config_error('backup_swift_auth_version %s needs the '
                            'keystoneauth1 library, which is not installed'
                            % conf.backup_swift_auth_version)
    version = conf.backup_swift_auth_version
    user = conf.backup_swift_user
    tenant = conf.backup_swift_tenant
    project = conf.backup_swift_project
    # As swiftclient: "tenant:user" names both when nothing else does.
    if ':' in user and not (tenant or project):
        tenant, user = user.split(':', 1)
    if version in V2_VERSIONS:
        plugin = v2.Password(_versioned(auth_url, '/v2.0'), username=user,
                             password=conf.backup_swift_key,
                             tenant_name=tenant or project)
    else:
        plugin = v3.Password(
            _versioned(auth_url, '/v3'), username=user,
            password=conf.backup_swift_key,
            project_name=project or tenant,
            user_domain_name=conf.backup_swift_user_domain,
            project_domain_name=conf.backup_swift_project_domain)
    verify = (False if conf.backup_swift_auth_insecure
              else conf.backup_swift_ca_cert_file or True)
    timeout = conf[CHUNKED_GROUP].swift_timeout or None
    return ks_session.Session(auth=plugin, verify=verify, timeout=timeout)


def account_settings(conf, context):
    """The ``SwiftSettings`` fields that say how to reach the account.

    Raises StoreConfigurationError naming the option to fix.
    """
    region = conf.backup_swift_region_name
    if conf.backup_swift_auth == 'single_user':
        if not conf.backup_swift_user:
            raise _config_error('single_user auth mode enabled, but '
                                'backup_swift_user is not set')
        auth_url = conf.backup_swift_auth_url or catalog_endpoint(
            context, conf.keystone_catalog_info, 'keystone_catalog_info',
            region)
        if not auth_url:
            raise _config_error(
                'Could not determine which Keystone endpoint to use. This '
                'can either be set in the service catalog or with the '
                "cinder.conf config option 'backup_swift_auth_url'.")
        version = str(conf.backup_swift_auth_version)
        if version in V1_VERSIONS:
            return dict(auth_url=auth_url, auth_version='1',
                        user=conf.backup_swift_user,
                        key=conf.backup_swift_key, where=auth_url)
        if version in V2_VERSIONS + V3_VERSIONS:
            _stype, _name, endpoint_type = parse_catalog_info(
                conf.swift_catalog_info, 'swift_catalog_info')
            options = {'service_type': _stype,
                       'endpoint_type': _interface(endpoint_type)}
            if region:
                options['region_name'] = region
            return dict(session=keystone_session(conf, auth_url),
                        auth_url=auth_url, auth_version=version,
                        user=conf.backup_swift_user,
                        key=conf.backup_swift_key, os_options=options,
                        where=auth_url)
        raise _config_error('backup_swift_auth_version must be 1, 2 or 3, '
                            'not %r' % conf.backup_swift_auth_version)
    # per_user
    if conf.backup_swift_url:
        project_id = getattr(context, 'project_id', None)
        storage_url = ('%s%s' % (conf.backup_swift_url, project_id)
                       if project_id else None)
    else:
        storage_url = catalog_endpoint(context, conf.swift_catalog_info,
                                       'swift_catalog_info', region)
    token = getattr(context, 'auth_token', None)
    return dict(storage_url=storage_url, token=token,
                where=storage_url or conf.backup_swift_url or '')


def check_per_user_settings(conf, settings):
    """Upstream's error when no Swift endpoint could be found."""
    if conf.backup_swift_auth != 'single_user' and not settings.get(
            'storage_url'):
        raise _config_error(
            'Could not determine which Swift endpoint to use. This can '
            'either be set in the service catalog or with the cinder.conf '
            "config option 'backup_swift_url'.")
