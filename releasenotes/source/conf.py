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

"""Sphinx configuration of the release notes (``tox -e releasenotes``).

reno reads the notes from the git history of the clone (no network); the
theme is told the project's name rather than asked to guess it.
"""

extensions = [
    'openstackdocstheme',
    'reno.sphinxext',
]

project = 'cinder_chunked_ext Release Notes'
copyright = 'cinder_chunked_ext developers'
master_doc = 'index'
source_suffix = {'.rst': 'restructuredtext'}
exclude_patterns = ['_build']
pygments_style = 'native'
version = ''
release = ''

html_theme = 'openstackdocs'
html_static_path = ['_static']
openstackdocs_repo_name = 'openstack/cinder-chunked-ext'
openstackdocs_bug_project = 'cinder-chunked-ext'
openstackdocs_bug_tag = 'releasenotes'
openstackdocs_auto_name = False
openstackdocs_auto_version = False
openstackdocs_pdf_link = False
