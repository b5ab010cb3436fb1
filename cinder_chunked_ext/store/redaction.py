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

"""Secrets kept out of log records, whoever logs them."""

import base64
import logging
import threading


class SecretRedactor(logging.Filter):
    """Replaces known secret strings in log records with ``***``.

    Client libraries log request headers at DEBUG level, and those carry
    credentials (S3's access key id and SSE-C key, Swift's auth token).
    A store registers its secrets with ``add`` and attaches the filter to
    its libraries' loggers with :func:`protect_loggers`; every form given
    and its base64 encoding are masked.
    """

    MASK = '***'

    def __init__(self):
        super().__init__()
        self._lock = threading.Lock()
        self._secrets = ()

    def add(self, *secrets):
        forms = set()
        for secret in secrets:
            if not secret:
                continue
            forms.add(secret)
            raw = secret.encode('utf-8')
            forms.add(base64.b64encode(raw).decode('ascii'))
        with self._lock:
            merged = set(self._secrets) | forms
            # Longest first, so that no part of a longer one survives.
            self._secrets = tuple(sorted(merged, key=len, reverse=True))

    def redact(self, text):
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, self.MASK)
        return text

    def filter(self, record):
        secrets = self._secrets
        if not secrets:
            return True
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
    """Attach ``redactor`` to every logger under ``prefixes`` that exists.

    Call it again after a library was first used: libraries create some
    of their loggers lazily.
    """
    manager = logging.Logger.manager
    for name, logger in list(manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger):
            continue
        if name.split('.', 1)[0] not in prefixes:
            continue
        if redactor not in logger.filters:
            logger.addFilter(redactor)
