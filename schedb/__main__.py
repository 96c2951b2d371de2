from schedb.cli import main

raise SystemExit(main())
