"""MkDocs hook: adds the reference pages, written from the code by workbench.reference, to
the site at build time, so they are never stale and never committed."""

from mkdocs.structure.files import File, Files

from workbench import reference


def on_files(files: Files, config) -> Files:
    for path, markdown in reference.pages().items():
        files.append(File.generated(config, path, content=markdown))
    return files
