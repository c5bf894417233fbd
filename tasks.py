"""picluster's command line: `invoke --list` shows every task, `invoke --help TASK` its options."""

from picluster.tasks import namespace

ns = namespace()
