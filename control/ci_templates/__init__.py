"""Readable templates of the pipelines ``splitway ci generate`` writes (package data).

``github.yaml``, ``gitlab.yaml`` and ``azure.yaml`` hold each YAML platform's fixed part;
``Jenkinsfile.tmpl`` and ``jenkins-*.groovy`` are the Jenkinsfile's templates. How they
are filled: :mod:`control.ci.render`; what each stage does: ``docs/ci.md``.
"""
