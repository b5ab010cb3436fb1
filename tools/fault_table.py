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

"""Build the reliability page from the fault cases and their test results.

Every ``doc/fault-cases/*.json`` file holds a list of cases, each one a
fault injected by a test::

    {"area": "POSIX repository",
     "case": "Repository full",
     "injected": "how the fault is made, for real or mocked",
     "operator_sees": "the error, exit status, status of the backup",
     "state_left": "what the repository, catalog and volume hold after",
     "test": "cinder_chunked_ext.tests.functional.test_x.TestY.test_z"}

``test`` is one test id or a list of them; an id may hold ``*`` and
``?`` wildcards (``fnmatch``), for example to take every row of a ddt
table.  The text fields are reStructuredText (inline markup only).

The script lists the tests (``python -m stestr list``), runs the ones the
cases name (``python -m stestr run --subunit --load-list FILE``), parses
the results with python-subunit (with ``--no-run``, those of
``python -m stestr last --subunit``) and writes
``doc/source/reliability.rst``: a short introduction, one table row per
case with its result, and totals (cases, passed, failed, skipped,
missing test ids, not run).  A case passes when all of its tests pass,
fails when one fails, and is skipped when none failed and one was
skipped; a test id that matches no test is missing.

Usage, from anywhere (the tests run in the source tree)::

    python tools/fault_table.py              # run the tests, write the page
    python tools/fault_table.py --no-run     # use the last stestr run
    python tools/fault_table.py --check      # also exit 1 if a test is
                                             # missing or failed
    python tools/fault_table.py --output -   # print the page instead

Options: ``--cases DIR`` (default ``doc/fault-cases``), ``--output PATH``
(default ``doc/source/reliability.rst``), ``--python PYTHON`` (the
interpreter that runs stestr; default: this one).  Results depend on the
machine: tests that need root (mounts, capabilities) are skipped
elsewhere, and the page says where it was generated.

Exit status: 0; 1 with ``--check`` when a listed test is missing, failed
or did not run; 2 when a case file is malformed or stestr cannot run.
"""

import argparse
import datetime
import fnmatch
import glob
import io
import json
import os
import platform
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES_DIR = os.path.join(ROOT, 'doc', 'fault-cases')
OUTPUT = os.path.join(ROOT, 'doc', 'source', 'reliability.rst')
FIELDS = ('area', 'case', 'injected', 'operator_sees', 'state_left', 'test')
TEST_PREFIX = 'cinder_chunked_ext.tests.'
# Areas appear in this order of their files; other files follow by name.
FILE_ORDER = ('posix.json', 's3.json', 'swift.json', 'damage.json',
              'service.json')

PASSED = 'passed'
FAILED = 'failed'
SKIPPED = 'skipped'
MISSING = 'missing'
NOT_RUN = 'not run'

INTRO = """\
===========
Reliability
===========

What happens when things go wrong: each row below is a fault that a test
injects, for real where the machine allows it (for example a full file
system, a read-only mount, permission bits, a process killed with
SIGKILL, bytes flipped in the repository), with what the operator sees,
what is left behind, and the result of the test when this page was
generated.

The rules every case checks:

* the operation fails with a clear error: one line from the command
  line tool, an exception naming the backup and the object or document
  from the driver;
* no backup is left marked available that cannot be restored: a backup
  is complete only once its ``_metadata`` object exists, and that object
  is written last;
* a backup never modifies its source volume, and nothing is written
  outside the repository and the restore target;
* a restore checks what it can before the first write (metadata, the
  object list, offsets and lengths against the volume, the chain of
  parents) and verifies each object before any of its data is written
  (on a new volume, an object larger than half of
  ``max_bytes_in_flight`` is verified as it is written); a failed
  restore names the object it stopped at, and the command line
  tool says how much of an existing target it changed.

The cases of *Many operations in one process* add the rules of a
``cinder-backup`` process, whose backups and restores run at once and
share its threads and its ``max_bytes_in_flight``: whatever a worker
thread raises, ``BaseException`` included, reaches the operation it
works for; a clean-up that fails never hides the error that stopped an
operation; a backup stores the very bytes it read and hashed, read
once; memory stays within the process's bound however many operations
run.

This page is generated by ``tools/fault_table.py`` from
``doc/fault-cases/*.json``; do not edit it by hand.  Run
``python tools/fault_table.py --check`` to run the tests and refresh it.
"""


class CaseFileError(Exception):
    """A fault-case file does not have the documented shape."""


def _file_order(path):
    name = os.path.basename(path)
    first = FILE_ORDER.index(name) if name in FILE_ORDER else len(FILE_ORDER)
    return first, name


def load_cases(directory):
    """Every case of every ``*.json`` file, in file order."""
    cases = []
    paths = sorted(glob.glob(os.path.join(directory, '*.json')),
                   key=_file_order)
    for path in paths:
        try:
            with open(path, encoding='utf-8') as f:
                rows = json.load(f)
        except (OSError, ValueError) as e:
            raise CaseFileError('%s: %s' % (path, e))
        if not isinstance(rows, list):
            raise CaseFileError('%s: not a JSON list of cases' % path)
        for number, row in enumerate(rows, 1):
            where = '%s, case %d' % (os.path.basename(path), number)
            if not isinstance(row, dict):
                raise CaseFileError('%s: not a JSON object' % where)
            missing = [f for f in FIELDS if f not in row]
            if missing:
                raise CaseFileError('%s: missing %s' % (where,
                                                        ', '.join(missing)))
            tests = row['test']
            if isinstance(tests, str):
                tests = [tests]
            if not tests or not all(isinstance(t, str) and t
                                    for t in tests):
                raise CaseFileError('%s: "test" must be a test id or a '
                                    'list of them' % where)
            for field in FIELDS[:-1]:
                if not isinstance(row[field], str):
                    raise CaseFileError('%s: "%s" must be text'
                                        % (where, field))
            case = dict(row, tests=tests, source=os.path.basename(path))
            cases.append(case)
    return cases


def _stestr(python, *args, stdout=None):
    cmd = [python, '-m', 'stestr'] + list(args)
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [ROOT] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep)
                  if p])
    return subprocess.run(cmd, cwd=ROOT, env=env, stdout=stdout,
                          stderr=subprocess.PIPE if stdout else None)


def list_tests(python):
    """Every test id stestr discovers."""
    if not os.path.isdir(os.path.join(ROOT, '.stestr')):
        # A fresh clone: stestr's commands need its repository.
        _stestr(python, 'init', stdout=subprocess.PIPE)
    proc = _stestr(python, 'list', stdout=subprocess.PIPE)
    if proc.returncode:
        raise RuntimeError('stestr list failed: %s'
                           % proc.stderr.decode(errors='replace'))
    return [line.strip() for line in proc.stdout.decode().splitlines()
            if line.strip().startswith(TEST_PREFIX)]


def resolve(cases, known):
    """Expand wildcards; map each case to ``(ids, missing patterns)``."""
    known_set = set(known)
    for case in cases:
        ids = []
        missing = []
        for pattern in case['tests']:
            if any(c in pattern for c in '*?['):
                found = sorted(fnmatch.filter(known, pattern))
            else:
                found = [pattern] if pattern in known_set else []
            if found:
                ids.extend(i for i in found if i not in ids)
            else:
                missing.append(pattern)
        case['ids'] = ids
        case['missing'] = missing


def run_tests(python, ids):
    """``{test id: (status, reason)}`` of a run of ``ids``.

    The results are read from this run's own subunit stream, not from
    ``stestr last``, which another run in the same tree may replace.
    """
    with tempfile.NamedTemporaryFile('w', suffix='.txt',
                                     delete=False) as f:
        f.write('\n'.join(ids) + '\n')
        load_list = f.name
    try:
        # Failures are read from the results, not the exit status.
        proc = _stestr(python, 'run', '--subunit', '--load-list',
                       load_list, stdout=subprocess.PIPE)
    finally:
        os.remove(load_list)
    results = parse_subunit(proc.stdout)
    if not results:
        raise RuntimeError('stestr run gave no results: %s'
                           % proc.stderr.decode(errors='replace'))
    return results


def last_results(python):
    """``{test id: (status, reason)}`` of the last stestr run."""
    proc = _stestr(python, 'last', '--subunit', stdout=subprocess.PIPE)
    if proc.returncode:
        raise RuntimeError('stestr last failed: %s'
                           % proc.stderr.decode(errors='replace'))
    return parse_subunit(proc.stdout)


def parse_subunit(data):
    """Final statuses in a subunit v2 stream (python-subunit)."""
    import subunit
    import testtools

    results = {}

    def on_test(test):
        status = test['status']
        if status in ('exists', 'inprogress', None):
            return
        reason = ''
        detail = test['details'].get('reason')
        if detail is not None:
            reason = ''.join(t for t in detail.iter_text())
        results[test['id']] = (_STATUS.get(status, FAILED), reason.strip())

    stream = subunit.ByteStreamToStreamResult(io.BytesIO(data),
                                              non_subunit_name='stdout')
    result = testtools.StreamToDict(on_test)
    result.startTestRun()
    try:
        stream.run(result)
    finally:
        result.stopTestRun()
    return results


_STATUS = {
    'success': PASSED,
    'xfail': PASSED,
    'skip': SKIPPED,
    'fail': FAILED,
    'uxsuccess': FAILED,
}


def judge(cases, results):
    """Set each case's ``result`` and ``note``."""
    for case in cases:
        statuses = [results.get(i, (NOT_RUN, ''))[0] for i in case['ids']]
        reasons = sorted({results[i][1] for i in case['ids']
                          if i in results and results[i][0] == SKIPPED
                          and results[i][1]})
        if case['missing']:
            case['result'] = MISSING
        elif FAILED in statuses:
            case['result'] = FAILED
        elif NOT_RUN in statuses:
            case['result'] = NOT_RUN
        elif SKIPPED in statuses:
            case['result'] = SKIPPED
        else:
            case['result'] = PASSED
        notes = []
        if len(case['ids']) > 1:
            notes.append('%d tests' % len(case['ids']))
        if case['result'] == SKIPPED and reasons:
            notes.append('; '.join(reasons))
        if case['missing']:
            notes.append('no test ' + ', '.join(case['missing']))
        case['note'] = '; '.join(notes)


def _cell(text, indent):
    lines = str(text).strip().splitlines() or ['']
    return ('\n' + ' ' * indent).join(line.rstrip() for line in lines)


def _short(test_id):
    return test_id[len(TEST_PREFIX):] if test_id.startswith(TEST_PREFIX) \
        else test_id


def render(cases, totals, environment):
    out = [INTRO, '', 'Results', '=======', '',
           environment, '',
           '.. list-table:: Totals',
           '   :header-rows: 1',
           '',
           '   * - Cases',
           '     - Passed',
           '     - Failed',
           '     - Skipped',
           '     - Missing test ids',
           '     - Not run']
    out.append('   * - %d' % totals['cases'])
    for key in (PASSED, FAILED, SKIPPED, MISSING, NOT_RUN):
        out.append('     - %d' % totals[key])
    out.append('')
    areas = []
    for case in cases:
        if case['area'] not in areas:
            areas.append(case['area'])
    for area in areas:
        out += ['', area, '-' * len(area), '',
                '.. list-table::',
                '   :header-rows: 1',
                '   :widths: 14 18 18 18 20 12',
                '',
                '   * - Case',
                '     - Injected',
                '     - Operator sees',
                '     - State left',
                '     - Test',
                '     - Result']
        for case in cases:
            if case['area'] != area:
                continue
            tests = case['tests']
            test_text = ', '.join('``%s``' % _short(t) for t in tests)
            result = '**%s**' % case['result']
            if case['note']:
                result += ' (%s)' % case['note']
            out.append('   * - %s' % _cell(case['case'], 7))
            for field in ('injected', 'operator_sees', 'state_left'):
                out.append('     - %s' % _cell(case[field], 7))
            out.append('     - %s' % _cell(test_text, 7))
            out.append('     - %s' % _cell(result, 7))
    return '\n'.join(out) + '\n'


def environment_text(python, ran):
    when = datetime.datetime.now(datetime.timezone.utc).strftime(
        '%Y-%m-%d %H:%M UTC')
    version = subprocess.run(
        [python, '-c', 'import platform, importlib.util; '
         'print(platform.python_version(), '
         'importlib.util.find_spec("cinder") is not None)'],
        stdout=subprocess.PIPE, cwd=ROOT).stdout.decode().split()
    py_version = version[0] if version else '?'
    with_cinder = len(version) > 1 and version[1] == 'True'
    user = 'root' if hasattr(os, 'geteuid') and os.geteuid() == 0 \
        else 'a regular user'
    return ('Generated on %s from %s on %s (%s), Python %s, %s, running '
            'as %s.  Tests that need root (mounts, dropped capabilities) '
            'or a service (an S3 or a Swift server) are skipped where they '
            'cannot run; the reason is in the result column.'
            % (when, 'a new test run' if ran else 'the last stestr run',
               platform.system(), platform.machine(), py_version,
               'with Cinder importable' if with_cinder
               else 'without Cinder', user))


def main(argv=None):
    parser = argparse.ArgumentParser(
        description='Run the fault-injection tests listed in '
                    'doc/fault-cases/*.json and write the reliability '
                    'page.')
    parser.add_argument('--cases', default=CASES_DIR, metavar='DIR',
                        help='directory of the *.json case files')
    parser.add_argument('--output', default=OUTPUT, metavar='PATH',
                        help='the page to write ("-" for stdout)')
    parser.add_argument('--python', default=sys.executable,
                        help='interpreter that runs stestr')
    parser.add_argument('--no-run', action='store_true',
                        help='use the results of the last stestr run')
    parser.add_argument('--check', action='store_true',
                        help='exit 1 if a listed test is missing or '
                             'failed')
    args = parser.parse_args(argv)

    try:
        cases = load_cases(args.cases)
    except CaseFileError as e:
        sys.stderr.write('fault_table: %s\n' % e)
        return 2
    if not cases:
        sys.stderr.write('fault_table: no cases in %s\n' % args.cases)
        return 2
    try:
        known = list_tests(args.python)
        resolve(cases, known)
        ids = []
        for case in cases:
            ids.extend(i for i in case['ids'] if i not in ids)
        if args.no_run or not ids:
            results = last_results(args.python)
        else:
            results = run_tests(args.python, ids)
    except (RuntimeError, OSError) as e:
        sys.stderr.write('fault_table: %s\n' % e)
        return 2
    judge(cases, results)

    totals = {key: 0 for key in (PASSED, FAILED, SKIPPED, MISSING,
                                 NOT_RUN)}
    for case in cases:
        totals[case['result']] += 1
    missing_ids = [p for case in cases for p in case['missing']]
    totals[MISSING] = len(missing_ids)
    totals['cases'] = len(cases)
    page = render(cases, totals,
                  environment_text(args.python, not args.no_run))
    if args.output == '-':
        sys.stdout.write(page)
    else:
        with open(args.output, 'w', encoding='utf-8') as f:
            f.write(page)
    sys.stderr.write(
        'fault_table: %d cases: %d passed, %d failed, %d skipped, %d not '
        'run, %d missing test ids%s\n'
        % (totals['cases'], totals[PASSED], totals[FAILED],
           totals[SKIPPED], totals[NOT_RUN], totals[MISSING],
           '' if args.output == '-' else '; wrote %s' % args.output))
    for case in cases:
        if case['result'] in (FAILED, MISSING, NOT_RUN):
            sys.stderr.write('  %s: %s / %s%s\n' % (
                case['result'], case['area'], case['case'],
                (' (no test %s)' % ', '.join(case['missing']))
                if case['missing'] else ''))
    if args.check and (totals[FAILED] or missing_ids or totals[NOT_RUN]):
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
