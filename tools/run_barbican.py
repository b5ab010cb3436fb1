#!/usr/bin/env python3
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

"""Run Barbican (from PyPI) on 127.0.0.1 for the encryption tests.

Run it with the Python of a virtualenv where ``pip install barbican``
was done (Barbican's dependencies do not belong in the test envs)::

    python3 -m venv /tmp/barbican-venv
    /tmp/barbican-venv/bin/pip install barbican
    /tmp/barbican-venv/bin/python tools/run_barbican.py /tmp/barbican 9311

No Keystone: the API runs the ``unauthenticated-context`` pipeline, in
which the project is the ``X-Project-Id`` header; secrets are kept in
SQLite, encrypted by the ``simple_crypto`` plugin with a key made for
this directory.  Then run the tests with
``CINDER_CHUNKED_BARBICAN_URL=http://127.0.0.1:9311``.  Port 0 picks a
free port, printed on the "barbican listening on" line
(``tools/with_barbican.py`` does all this for ``tox -e barbican``).
"""

import base64
import configparser
import os
import sys
import uuid
from wsgiref import simple_server


PASTE = """[composite:main]
use = egg:Paste#urlmap
/: barbican_version
/v1: barbican_api

[pipeline:barbican_version]
pipeline = request_id versionapp

[pipeline:barbican_api]
pipeline = request_id unauthenticated-context microversion apiapp

[app:apiapp]
paste.app_factory = barbican.api.app:create_main_app

[app:versionapp]
paste.app_factory = barbican.api.app:create_version_app

[filter:request_id]
paste.filter_factory = oslo_middleware.request_id:RequestId.factory

[filter:microversion]
paste.filter_factory = barbican.api.middleware.microversion:\
MicroversionMiddleware.factory

[filter:unauthenticated-context]
paste.filter_factory = barbican.api.middleware.context:\
UnauthenticatedContextMiddleware.factory
"""

# The database is oslo.db's [database] connection: Barbican 23 ignores
# the old [DEFAULT] sql_connection and would use ./barbican.sqlite.
CONF = """[DEFAULT]
host_href = http://127.0.0.1:{port}
db_auto_create = True

[database]
connection = sqlite:///{state}/barbican.sqlite

[secretstore]
enabled_secretstore_plugins = store_crypto

[crypto]
enabled_crypto_plugins = simple_crypto

[simple_crypto_plugin]
kek = {kek}

[oslo_policy]
enforce_scope = False
enforce_new_defaults = False
"""


def _kek(conf_path):
    """The simple_crypto KEK of this state directory (made once)."""
    if os.path.exists(conf_path):
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(conf_path)
        kek = parser.get('simple_crypto_plugin', 'kek', fallback=None)
        if kek:
            return kek
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def main(state, port):
    state = os.path.abspath(state)
    # Port 0: a free port, chosen here before the configuration (which
    # names it) is written.  The application is set once it is loaded.
    server = simple_server.make_server('127.0.0.1', int(port), None)
    port = server.server_address[1]
    # Barbican's plugins each parse their own configuration from the
    # default places, ~/.barbican/barbican.conf first: HOME is the state.
    os.makedirs(os.path.join(state, '.barbican'), exist_ok=True)
    os.environ['HOME'] = state
    conf_path = os.path.join(state, '.barbican', 'barbican.conf')
    kek = _kek(conf_path)
    with open(conf_path, 'w') as f:
        f.write(CONF.format(port=port, state=state, kek=kek))
    paste_path = os.path.join(state, 'barbican-api-paste.ini')
    with open(paste_path, 'w') as f:
        f.write(PASTE)
    from barbican.common import config
    config.parse_args(config.CONF)
    from paste import deploy
    app = deploy.loadapp('config:%s' % paste_path)

    def with_request_id(environ, start_response):
        # UnauthenticatedContextMiddleware reads ``req.request_id``, which
        # only the Keystone pipeline sets.
        environ.setdefault('webob.adhoc_attrs', {})['request_id'] = (
            'req-' + str(uuid.uuid4()))
        return app(environ, start_response)

    server.set_app(with_request_id)
    print('barbican listening on http://127.0.0.1:%s' % port, flush=True)
    server.serve_forever()


if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else '9311')
