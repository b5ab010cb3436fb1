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

"""Secrets kept out of log records, whoever logs them.

Client libraries log request headers at DEBUG level, and those carry
credentials (S3's access key id and SSE-C key, Swift's tokens and keys).
swiftclient logs every request as a curl command line and every answer's
headers (at DEBUG, at INFO for errors), with tokens and keys cut to a
16-character prefix, not removed; keystoneauth logs its requests too.
:class:`SecretRedactor` is a logging filter that replaces

* every secret it was told about (keys, passwords, tokens), and
* the value of every header that carries a credential, whatever its
  value (a token it has not been told about yet: the answer that hands
  out a new token is logged before anyone else sees the token)

with ``***``.  :func:`protect_loggers` attaches it to the loggers of the
named libraries and to their children.
"""

import base64
import logging
import re

from cinder_chunked_ext import locks

MASK = '***'

#: Headers whose values are credentials (lower case).
SENSITIVE_HEADERS = (
    'x-auth-token', 'x-storage-token', 'x-auth-key', 'x-service-token',
    'x-subject-token', 'x-auth-password',
    'x-account-meta-temp-url-key', 'x-account-meta-temp-url-key-2',
    'x-container-meta-temp-url-key', 'x-container-meta-temp-url-key-2',
    'set-cookie')

# "X-Auth-Token: value", 'X-Auth-Token': 'value', X-Auth-Token=value ...
_HEADER_VALUE = re.compile(
    r'''(?i)(\b(?:%s)['"]?\s*[:=]\s*['"]?)([^'"\s,}\]]+)'''
    % '|'.join(re.escape(h) for h in SENSITIVE_HEADERS))


class SecretRedactor(logging.Filter):
    """Replaces secrets and credential headers in log records.

    A store registers its secrets with ``add`` and attaches the filter
    to its libraries' loggers with :func:`protect_loggers`; every form
    given and its base64 encoding are masked.
    """

    MASK = MASK

    def __init__(self):
        super().__init__()
        self._lock = locks.native_lock()
        self._secrets = ()

    def add(self, *secrets):
        """Remember ``secrets`` (and their base64 forms) to mask."""
        forms = set()
        for secret in secrets:
            if not secret or not isinstance(secret, str):
                continue
            forms.add(secret)
            forms.add(base64.b64encode(secret.encode('utf-8')).decode())
        if not forms:
            return
        with self._lock:
            merged = set(self._secrets) | forms
            # Longest first, so that no part of a longer one survives.
            self._secrets = tuple(sorted(merged, key=len, reverse=True))

    def redact(self, text):
        """``text`` with every known secret and credential header masked."""
        if not isinstance(text, str):
            text = str(text)
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        if _HEADER_VALUE.search(text):
            text = _HEADER_VALUE.sub(r'\1' + MASK, text)
        return text

    def filter(self, record):
        try:
            message = record.getMessage()
        except Exception:  # noqa - a broken record is not ours to fix
            return True
        clean = self.redact(message)
        if clean != message:
            record.msg = clean
            record.args = None
        if record.exc_info and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            clean = self.redact(text)
            if clean != text:
                record.exc_text = clean
        return True


def protect_loggers(redactor, prefixes):
    """Attach ``redactor`` to the loggers named ``prefix`` or under it.

    A logger filter sees only records logged on that very logger, so
    every existing child is protected too; call it again after a library
    was first used: libraries create some of their loggers lazily.
    """
    manager = logging.Logger.manager
    names = set(prefixes)
    names.update(name for name in list(manager.loggerDict)
                 if name.split('.', 1)[0] in prefixes)
    for name in sorted(names):
        logger = logging.getLogger(name)
        if redactor not in logger.filters:
            logger.addFilter(redactor)
