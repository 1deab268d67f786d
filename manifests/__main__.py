from manifests.cli import main

raise SystemExit(main())
