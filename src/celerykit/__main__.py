from celerykit.cli import main

raise SystemExit(main())
