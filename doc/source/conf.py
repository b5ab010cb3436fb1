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

"""Sphinx configuration of the operator documentation (``tox -e docs``).

The build must work offline in a fresh clone: the theme is told the
project's name and not to ask pbr or the network for a version, and the
configuration reference and the sample file are generated from the
installed package's ``oslo.config.opts`` entry points at build time.
"""

import os
import sys

# tools/ (the fault table generator) is documented from the source tree.
sys.path.insert(0, os.path.abspath(os.path.join('..', '..')))

extensions = [
    'openstackdocstheme',
    'oslo_config.sphinxext',
    'oslo_config.sphinxconfiggen',
    'sphinxcontrib.autoprogram',
]

# -- oslo.config -------------------------------------------------------------
# The sample file is written to _static/ and linked from the sample page.
config_generator_config_file = [
    ('../../etc/oslo-config-generator/cinder_chunked_ext.conf',
     '_static/cinder_chunked_ext'),
]

# -- sphinxcontrib.autoprogram ------------------------------------------------
# The CLI reference (cli/reference.rst) is generated from the parser.  Two
# changes make it readable: a command's heading is the command alone
# ("backup create", not "cinder-chunked-backup backup create", which the
# sidebar cut to "cinder-chunked-bac..."), and the program's epilog (the
# JSON output and exit status sections of --help, whose headings nested
# every command below "Exit status") is left to the guide, cli.rst.
from sphinxcontrib import autoprogram  # noqa: E402

_render_rst = autoprogram.render_rst
_PROG = 'cinder-chunked-backup'


def _render_short_rst(title, options, **kwargs):
    short = title[len(_PROG) + 1:] if title.startswith(_PROG + ' ') \
        else title
    if title == _PROG:
        kwargs['epilog'] = None
    lines = list(_render_rst(title, options, **kwargs))
    for index, line in enumerate(lines[:-1]):
        if line == title and set(lines[index + 1]) <= set('?!') and \
                len(lines[index + 1]) == len(title):
            lines[index] = short
            lines[index + 1] = lines[index + 1][0] * len(short)
            break
    return lines


autoprogram.render_rst = _render_short_rst

# -- General -----------------------------------------------------------------
# Quotes and ellipses only: a dash pair stays "--", so that an option
# named in running text ("--json") is copied as it is typed.
smartquotes_action = 'qe'
# Literal blocks (::) are shell sessions, output and configuration, not
# Python: shown as they are.  A code-block names its language.
highlight_language = 'none'
project = 'cinder_chunked_ext'
copyright = 'cinder_chunked_ext developers'
master_doc = 'index'
source_suffix = {'.rst': 'restructuredtext'}
exclude_patterns = ['_build']
pygments_style = 'native'
# Unreleased: no version on the pages rather than a guess from git.
version = ''
release = ''

# -- openstackdocstheme ------------------------------------------------------
html_theme = 'openstackdocs'
html_static_path = ['_static']
openstackdocs_repo_name = 'openstack/cinder-chunked-ext'
openstackdocs_bug_project = 'cinder-chunked-ext'
openstackdocs_bug_tag = 'doc'
openstackdocs_auto_name = False
openstackdocs_auto_version = False
openstackdocs_pdf_link = False
html_theme_options = {
    'display_global_toc_section': True,
    'show_other_versions': False,
}
