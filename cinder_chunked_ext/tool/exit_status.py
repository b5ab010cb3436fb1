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

"""The exit statuses of ``cinder-chunked-backup`` and what gives them.

A command raises a :class:`CliError` for a failure it expects (a usage
error, something not found); :func:`classify` gives the status and the
one-line message of the errors of the engine, oslo.config, the system
and the catalog.  Anything else is an unexpected error (status 1).
"""

import sqlite3

from oslo_config import cfg

OK = 0
FAILED = 1
USAGE = 2
NOT_FOUND = 3
INTERRUPTED = 130


class CliError(Exception):
    """An expected failure, reported as one line with an exit status."""

    exit_code = FAILED


class UsageError(CliError):
    exit_code = USAGE


class NotFoundError(CliError):
    exit_code = NOT_FOUND


def classify(error):
    """``(exit status, message)`` of an expected error, else ``None``.

    It imports the engine's exceptions: an ``ImportError`` means that the
    engine itself cannot be imported.
    """
    from cinder_chunked_ext import cinder_compat
    from cinder_chunked_ext import exception
    if isinstance(error, cfg.ConfigFilesNotFoundError):
        return NOT_FOUND, str(error)
    if isinstance(error, cfg.Error):
        return USAGE, 'configuration: %s' % error
    if isinstance(error, (exception.ConfigNotFound,
                          exception.InvalidConfigurationValue,
                          exception.UnsafePath)):
        return USAGE, str(error)
    if isinstance(error, exception.BackupNotFound):
        return NOT_FOUND, str(error)
    if isinstance(error, cinder_compat.CinderException):
        return FAILED, str(error)
    if isinstance(error, OSError):
        text = error.strerror or str(error)
        if error.filename:
            text = '%s: %s' % (error.filename, text)
        return FAILED, text
    if isinstance(error, sqlite3.Error):
        return FAILED, 'catalog: %s' % error
    return None


def reported(out, document, lines, failure=None):
    """Print a command's result; a failure met on the way fails the run.

    ``failure`` (a message) is added to the JSON document and said on
    stderr after the result, which still lists what was done.
    """
    if failure is not None:
        document['error'] = failure
    out.result(document, lines)
    if failure is None:
        return OK
    out.problem('error', failure)
    return FAILED
