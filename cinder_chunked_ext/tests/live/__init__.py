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

"""A live Cinder on this machine: ``tox -e live``.

RabbitMQ, cinder-api, cinder-scheduler, cinder-volume and cinder-backup
run as separate processes on 127.0.0.1 (see :mod:`.cluster`); the tests
drive them through python-cinderclient and look at what our drivers left
in their stores.
"""

import os

ENABLE_ENV = 'CINDER_CHUNKED_LIVE'


def load_tests(loader, standard_tests, pattern):
    """Only ``tox -e live`` (``CINDER_CHUNKED_LIVE=1``) loads these tests.

    They start a whole Cinder; the py3 environment, whose discovery
    covers every test package, must not.
    """
    if os.environ.get(ENABLE_ENV, '') not in ('1', 'true', 'yes'):
        return standard_tests
    here = os.path.dirname(os.path.abspath(__file__))
    top = os.path.dirname(os.path.dirname(os.path.dirname(here)))
    standard_tests.addTests(loader.discover(
        start_dir=here, pattern=pattern or 'test*.py', top_level_dir=top))
    return standard_tests
