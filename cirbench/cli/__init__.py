"""The ``cirbench`` command line: :mod:`.app` is the group and the entry point; each other module
holds the commands of one concern, with the options they share declared once in :mod:`.options`."""
