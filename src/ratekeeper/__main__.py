from ratekeeper.cli import main

raise SystemExit(main())
