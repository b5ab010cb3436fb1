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

"""cinder-chunked-backup: back up, verify and restore volumes without Cinder.

Usage::

    cinder-chunked-backup [--version] [--repository PATH] [--catalog PATH]
                          [--driver posix|nfs|s3|swift] [--config-file FILE]
                          [--password-file FILE]
                          [--compression ALGO] [--json] [--verbose]
                          [--debug] COMMAND ...

Global options come before the command (``--json``, ``--verbose`` and
``--debug`` are also accepted after it).  The drivers are the ones
cinder-backup loads, with the same options: ``--config-file cinder.conf``
points the tool at the repository a cloud writes to.  Without a
configuration file (nor ``$CINDER_CHUNKED_BACKUP_REPOSITORY``) the POSIX
repository is ``$XDG_DATA_HOME/cinder-chunked-backup/repository``
(``~/.local/share/...``).  ``--repository`` is the directory
(``backup_posix_path``) for posix, the share (``backup_share``) for nfs,
the bucket (``backup_s3_store_bucket``) for s3 and the container
(``backup_swift_container``) for swift, whose account the configuration
names (``backup_swift_auth = single_user``).  Backups are recorded
in an SQLite catalog (``--catalog``, else ``$CINDER_CHUNKED_BACKUP_CATALOG``):
``<repository>/catalog.sqlite3`` for posix, else one file per repository
in ``$XDG_DATA_HOME/cinder-chunked-backup/catalogs/``.  Only
``backup create`` makes a missing repository; every other command
fails (status 3) when it is missing or not a directory, bucket or
container.

Commands::

    backup create VOLUME [--incremental] [--name NAME]
                  [--description TEXT] [--container NAME]
                  [--volume-id ID] [--size SIZE]
    backup list [--volume-id ID] [--status STATUS]
    backup show ID
    backup delete ID [ID ...] [--force]
    backup prune --keep-last N | --keep-hourly N | --keep-daily N |
                 --keep-weekly N | --keep-monthly N | --keep-yearly N ...
                 [--volume-id ID] [--delete-errors] [--dry-run]
    restore ID TARGET [--new | --existing [--resize]]
    restore --from-repository {ID | CONTAINER PREFIX} TARGET [...]
    verify ID [ID ...] | verify --all
    verify --from-repository {ID | CONTAINER PREFIX}
    repository scan [--container NAME ...]
    repository import [--container NAME ...] [--overwrite]
    repository check [--container NAME ...] [--delete] [--grace DURATION]
    repository rekey --new-password-file FILE [--container NAME ...]
    demo [--workdir DIR] [--size SIZE] [--keep]

VOLUME is a file or a block device (``-`` or a FIFO need ``--size``).
An incremental backup's parent is the newest available backup of the
same volume; a volume is named by ``--volume-id``, by default a uuid5 of
its real path.  An ID may be abbreviated to a unique prefix (4 or more
characters).  ``restore --new`` (the default when TARGET does not exist
or is empty) creates a sparse file of the volume's size; ``--existing``
overwrites TARGET in place, and refuses a file of another size unless
``--resize``.  ``restore --from-repository`` and
``verify --from-repository`` use no catalog: the backup and its parents
are read from the repository (``repository scan`` lists them).  Times
are printed in UTC (``2026-01-02 03:04:05 UTC``); JSON has ISO 8601.
With ``--password-file FILE`` (or ``$CINDER_CHUNKED_BACKUP_PASSWORD_FILE``)
``backup create`` encrypts (AES-256-GCM, a key per backup wrapped under
a key derived from the password with scrypt), and every command reads
encrypted backups; a wrong password fails (exit 1) before any target is
created or written.

This module holds the parser and :func:`main`; the handlers of the
core commands are in :mod:`cinder_chunked_ext.tool.commands`, the
configuration and drivers of a run in
:mod:`cinder_chunked_ext.tool.session`, backup, restore and verify of volume
files in :mod:`cinder_chunked_ext.tool.operations`, what the tool prints in
:mod:`cinder_chunked_ext.tool.progress`, exit statuses in
:mod:`cinder_chunked_ext.tool.exit_status` and the demo in
:mod:`cinder_chunked_ext.tool.demo`.

JSON output (--json)
====================

Each command prints one JSON object on stdout:

* ``backup create``, ``backup show``: a *backup*: ``id``, ``volume_id``,
  ``parent_id`` (null for a full backup), ``incremental``, ``status``
  (creating, available, error, deleting, restoring), ``size_gib``,
  ``volume_size_bytes``, ``object_count``, ``container``,
  ``service_metadata`` (the object name prefix), ``name``,
  ``description``, ``created_at``, ``availability_zone``, ``driver``,
  ``source``, ``fail_reason``; ``backup create`` adds ``seconds``,
  ``repository``, ``stored_bytes``, ``changed_bytes`` and
  ``compression_ratio``;
  ``backup show`` adds ``children`` (ids of backups based on it).
* ``backup list``: ``{"backups": [backup, ...]}``, oldest first.
* ``backup delete``: ``{"id": ID, "deleted": true}``; with several IDs
  ``{"deleted": [ids], "not_deleted": [ids]}``.
* ``restore``: ``backup_id``, ``target``, ``mode`` (new or existing),
  ``size_bytes``, ``chain`` (ids, the requested backup first, its full
  backup last), ``source`` (catalog or repository), ``seconds``,
  ``target_note`` (null, or what happened to a target of another size).
* ``verify``: ``{"ok": bool, "backups": [report, ...]}``; a *report* has
  ``backup_id``, ``ok``, ``chain``, ``objects_checked``,
  ``bytes_checked`` and ``problems``, a list of ``{"backup_id",
  "object" (an object name or null), "problem"}``.
* ``repository scan``: ``{"repository": TEXT, "backups": [...]}`` with
  ``id``, ``volume_id``, ``parent_id``, ``container``, ``prefix``,
  ``created_at``, ``name``, ``description``, ``object_count``,
  ``in_catalog`` and ``error`` (null, or why the metadata is unreadable).
* ``backup prune``: ``dry_run``, ``policy`` (the counts), ``deleted``
  (ids) and ``volumes``, a list of ``{"volume_id", "keep", "delete",
  "resume", "other"}``; each holds ``{"id", "created_at", "parent_id",
  "status"}`` items, ``keep``'s with ``reasons`` (``last``, ``hourly``,
  ``daily``, ``weekly``, ``monthly``, ``yearly``, ``parent of ID``).
* ``repository import``: ``added``, ``unchanged`` (ids),
  ``disagreements`` (``{"id", "fields": {NAME: {"catalog",
  "repository"}}, "overwritten"}``), ``unreadable`` (``{"container",
  "prefix", "error"}``), ``not_in_repository`` (ids), ``repository``,
  ``catalog``.
* ``repository check``: ``repository``, ``containers``, ``delete``,
  ``grace_seconds`` and ``findings``, a list of ``{"kind"`` (incomplete,
  unlisted, temporary, empty, missing, unreadable), ``"container"``,
  ``"prefix"``, ``"backup_id"``, ``"objects"``, ``"temporary"``,
  ``"bytes"``, ``"age_seconds"``, ``"catalog_status"``, ``"detail"``,
  ``"action"}``.
* ``demo``: ``ok``, ``workdir``, ``repository``, ``full_backup_id``,
  ``incremental_backup_id``, ``sha256_original``, ``sha256_restored``
  and ``steps``, a list of ``{"step", "seconds", "detail"}``.
* On failure: ``{"error": MESSAGE, "exit_code": N}``.

Exit status
===========

* 0: success.
* 1: the operation failed, or verification or repository check found
  a problem (a damaged backup, a store error, an I/O error).
* 2: usage error or a request refused as invalid (bad option or
  configuration, a backup others depend on, a wrong status).
* 3: not found (the repository, the volume file, a backup id, a
  configuration file, a backup in the repository).
* 130: interrupted (Ctrl-C or SIGTERM); a backup in progress is marked
  ``error`` and its objects are removed.

Errors are one line on stderr.  ``--debug`` adds tracebacks and debug
logs; ``--verbose`` adds the engine's progress logs.  A progress bar
(throughput and ETA) is drawn on stderr when it is a terminal; when it
is not, ``--verbose`` logs the same line every 10 seconds.
"""

import argparse
import contextlib
import logging
import os
import signal
import sys
import traceback

from cinder_chunked_ext.tool import catalog_import
from cinder_chunked_ext.tool import cinder_db
from cinder_chunked_ext.tool import commands as handlers
from cinder_chunked_ext.tool import demo
from cinder_chunked_ext.tool import exit_status
from cinder_chunked_ext.tool import password as password_lib
from cinder_chunked_ext.tool import progress
from cinder_chunked_ext.tool import prune
from cinder_chunked_ext.tool import rekey
from cinder_chunked_ext.tool import repository as repository_lib
from cinder_chunked_ext.tool import repository_check
from cinder_chunked_ext.tool import session as session_lib

LOG = logging.getLogger(__name__)


def parse_size(text):
    """Bytes from ``65536``, ``64K``, ``64M``, ``1G``, ``1.5GiB``..."""
    value = text.strip().upper()
    for suffix in ('IB', 'B'):
        if value.endswith(suffix) and len(value) > len(suffix):
            value = value[:-len(suffix)]
            break
    factor = 1
    if value and value[-1] in 'KMGT':
        factor = 1024 ** ('KMGT'.index(value[-1]) + 1)
        value = value[:-1]
    try:
        size = int(float(value) * factor)
    except ValueError:
        raise argparse.ArgumentTypeError('%r is not a size (e.g. 64M)'
                                         % text)
    if size <= 0:
        raise argparse.ArgumentTypeError('size %r is not positive' % text)
    return size


def _epilog():
    marker = 'JSON output (--json)'
    text = __doc__[__doc__.index(marker):]
    return text.replace('``', '')


class _Parser(argparse.ArgumentParser):
    """Reports a usage error to :func:`main` (``--json`` prints it too)."""

    def error(self, message):
        raise exit_status.ArgumentError(self, message)


def _version():
    from importlib import metadata
    try:
        return metadata.version('cinder_chunked_ext')
    except metadata.PackageNotFoundError:
        return 'unknown (not installed)'


def _parser_with(flags):
    """An ArgumentParser class whose instances inherit ``flags``."""
    class Parser(_Parser):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault('parents', [flags])
            kwargs.setdefault('formatter_class',
                              argparse.RawDescriptionHelpFormatter)
            super().__init__(*args, **kwargs)
    return Parser


def build_parser():
    parser = _Parser(
        prog=session_lib.PROG,
        description='Back up, verify and restore volumes with the '
                    'cinder_chunked_ext drivers, without a running '
                    'Cinder.',
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--version', action='version',
                        version='%(prog)s ' + _version())
    parser.add_argument('--repository', metavar='PATH',
                        help='the repository: directory for posix '
                             '(backup_posix_path), share for nfs '
                             '(backup_share), bucket for s3 '
                             '(backup_s3_store_bucket), container for '
                             'swift (backup_swift_container); default: '
                             '$%s, else the configuration file, else %s '
                             'for posix' % (session_lib.REPOSITORY_ENV,
                                            os.path.join(
                                                '$XDG_DATA_HOME',
                                                session_lib.APP_DIR,
                                                'repository')))
    parser.add_argument('--catalog', metavar='PATH',
                        help='the SQLite catalog of backups; default: '
                             '$%s, else <repository>/%s for posix, else '
                             'one file per repository in %s'
                             % (session_lib.CATALOG_ENV,
                                session_lib.CATALOG_NAME, os.path.join(
                                    '$XDG_DATA_HOME', session_lib.APP_DIR,
                                    session_lib.CATALOGS_DIR)))
    parser.add_argument('--driver', choices=session_lib.DRIVERS,
                        help='backup driver (default: posix)')
    parser.add_argument('--config-file', metavar='FILE', action='append',
                        help='a cinder.conf-style file with the drivers\' '
                             'options; may be repeated')
    parser.add_argument('--password-file', metavar='FILE',
                        default=os.environ.get(password_lib.ENV) or None,
                        help='encrypt new backups and decrypt encrypted '
                             'ones with the password on the first line of '
                             'FILE (default: $%s)' % password_lib.ENV)
    parser.add_argument('--compression', metavar='ALGO',
                        help='backup_compression_algorithm: none, zlib, '
                             'gzip, bz2, bzip2 or zstd')
    parser.add_argument('--json', action='store_true',
                        help='print one JSON object on stdout')
    parser.add_argument('--verbose', '-v', action='store_true',
                        help='show the engine\'s progress logs')
    parser.add_argument('--debug', action='store_true',
                        help='show debug logs and tracebacks')
    # The output flags are also accepted after the command.
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument('--json', action='store_true',
                       default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    flags.add_argument('--verbose', '-v', action='store_true',
                       default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    flags.add_argument('--debug', action='store_true',
                       default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest='command', metavar='COMMAND',
                                     parser_class=_parser_with(flags))
    commands.required = True

    backup = commands.add_parser('backup', help='create, list, show, '
                                                'delete and prune backups')
    backup_cmds = backup.add_subparsers(dest='backup_command',
                                        metavar='ACTION')
    backup_cmds.required = True
    create = backup_cmds.add_parser('create', help='back up a volume file '
                                                   'or block device')
    create.add_argument('volume', metavar='VOLUME',
                        help='file, block device, FIFO or - for stdin')
    create.add_argument('--incremental', action='store_true',
                        help='only what changed since the newest '
                             'available backup of the volume')
    create.add_argument('--name', help='display name')
    create.add_argument('--description', help='display description')
    create.add_argument('--container',
                        help='container (directory or bucket) to use '
                             'instead of the driver\'s default')
    create.add_argument('--volume-id',
                        help='volume id (default: uuid5 of the real path)')
    create.add_argument('--size', type=parse_size,
                        help='size of a stream volume (FIFO, stdin): at '
                             'most this many bytes are read')
    create.set_defaults(func=handlers.cmd_backup_create,
                        creates_repository=True)

    listing = backup_cmds.add_parser('list', help='list the catalog')
    listing.add_argument('--volume-id', metavar='ID',
                         help='only the backups of this volume (as backup '
                              'list --json shows it)')
    listing.add_argument('--status', choices=handlers.STATUSES,
                         help='only the backups in this status')
    listing.set_defaults(func=handlers.cmd_backup_list)

    show = backup_cmds.add_parser('show', help='show one backup')
    show.add_argument('id', metavar='ID',
                      help='backup ID, or a unique prefix of 4 or more '
                           'characters')
    show.set_defaults(func=handlers.cmd_backup_show)

    delete = backup_cmds.add_parser('delete', help='delete backups')
    delete.add_argument('ids', metavar='ID', nargs='+',
                        help='backup ID, or a unique prefix of 4 or more '
                             'characters; several are deleted newest '
                             'first, so an incremental backup goes '
                             'before its parent')
    delete.add_argument('--force', action='store_true',
                        help='also delete a backup in another status than '
                             'available or error')
    delete.set_defaults(func=handlers.cmd_backup_delete)
    prune.add_parser(backup_cmds)

    restore = commands.add_parser(
        'restore', help='restore a backup to a file or device',
        usage='%(prog)s [--new | --existing [--resize]] ID TARGET\n'
              '       %(prog)s [--new | --existing [--resize]] '
              '--from-repository {ID | CONTAINER PREFIX} TARGET')
    restore.add_argument('args', nargs='+', metavar='ID TARGET',
                         help='backup ID (or a unique prefix of 4 or more '
                              'characters) and target; with '
                              '--from-repository, ID or CONTAINER PREFIX, '
                              'then TARGET')
    restore.add_argument('--from-repository', action='store_true',
                         help='read the backup and its parents from the '
                              'repository alone (no catalog): give its ID '
                              'or the CONTAINER PREFIX repository scan '
                              'prints')
    restore.add_argument('--resize', action='store_true',
                         help='with --existing: make a TARGET file of '
                              'another size exactly the size of the '
                              'backup\'s volume (without it, a size '
                              'mismatch is refused)')
    modes = restore.add_mutually_exclusive_group()
    modes.add_argument('--new', action='store_true',
                       help='TARGET must not exist or be empty; it is '
                            'created sparse with the volume\'s size')
    modes.add_argument('--existing', action='store_true',
                       help='overwrite TARGET in place')
    restore.set_defaults(func=handlers.cmd_restore)

    verify = commands.add_parser(
        'verify', help='check a backup chain against its checksums')
    verify.add_argument('ids', metavar='ID', nargs='*',
                        help='backup ID, or a unique prefix of 4 or more '
                             'characters (several may be given); with '
                             '--from-repository, ID or CONTAINER PREFIX')
    verify.add_argument('--all', action='store_true',
                        help='every available backup of the catalog')
    verify.add_argument('--from-repository', action='store_true',
                        help='a backup found in the repository (no '
                             'catalog), by ID or by the CONTAINER PREFIX '
                             'repository scan prints')
    verify.set_defaults(func=handlers.cmd_verify)

    repository = commands.add_parser(
        'repository', help='scan, import and check a repository')
    repo_cmds = repository.add_subparsers(dest='repository_command',
                                          metavar='ACTION')
    repo_cmds.required = True
    scan = repo_cmds.add_parser(
        'scan', help='list the backups a repository holds (read from it, '
                     'not from the catalog)')
    scan.add_argument('--container', action='append',
                      help='list this container (default: the whole '
                           'POSIX repository, or the configured bucket)')
    scan.set_defaults(func=handlers.cmd_repository_scan)
    catalog_import.add_parser(repo_cmds)
    repository_check.add_parser(repo_cmds)
    rekey.add_parser(repo_cmds)
    cinder_db.add_parser(commands)

    sample = commands.add_parser(
        'demo', help='back up, verify and restore a sample volume')
    sample.add_argument('--workdir', metavar='DIR',
                        help='where to put the files (default: a new '
                             'temporary directory, removed on success)')
    sample.add_argument('--size', type=parse_size,
                        default=demo.DEFAULT_SIZE,
                        help='size of the sample volume (default: 64M)')
    sample.add_argument('--keep', action='store_true',
                        help='keep the temporary directory')
    sample.set_defaults(func=demo.cmd_demo)
    return parser


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt()


def main(argv=None):
    """Run the tool; returns the exit status.

    Without ``argv`` (the console script, ``python -m``) it runs as the
    program, on the package's stand-ins for Cinder (see
    :func:`cinder_chunked_ext.tool.session.keep_cinder_out`).  With ``argv``
    (tests, other callers) it leaves the process's imports as they are.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except exit_status.ArgumentError as e:
        words = sys.argv[1:] if argv is None else list(argv)
        e.report(progress.Output(session_lib.PROG, '--json' in words))
        return exit_status.USAGE
    # The cinder commands work on Cinder's own database.
    needs_cinder = getattr(args, 'needs_cinder', False)
    if argv is None and not needs_cinder:
        session_lib.keep_cinder_out()
    logging_state = progress.setup_logging(args, session_lib.PROG)
    out = progress.Output(session_lib.PROG, args.json)
    # Ctrl-C must interrupt even when the parent process ignores SIGINT.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        session_lib.quiet_import_engine(args.debug)
        session = session_lib.Session(args, out)
        if args.func is not demo.cmd_demo and not needs_cinder:
            session.configure()
            if not getattr(args, 'creates_repository', False):
                repository_lib.require(session,
                                       getattr(args, 'container', None))
        return args.func(session, args)
    except KeyboardInterrupt:
        out.error('interrupted', exit_status.INTERRUPTED)
        return exit_status.INTERRUPTED
    except exit_status.CliError as e:
        if args.debug:
            traceback.print_exc()
        out.error(str(e), e.exit_code)
        return e.exit_code
    except Exception as e:
        if args.debug:
            traceback.print_exc()
        try:
            known = exit_status.classify(e)
        except ImportError:    # the engine itself failed to import
            known = None
        if known is None:
            out.error('%s: %s (unexpected error; run with --debug for '
                      'details)' % (type(e).__name__, e), exit_status.FAILED)
            return exit_status.FAILED
        code, message = known
        out.error(message, code)
        return code
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
        progress.restore_logging(logging_state)
        with contextlib.suppress(Exception):
            sys.stdout.flush()
