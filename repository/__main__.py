from repository.cli import main

raise SystemExit(main())
