from leo_activation.cli import main

raise SystemExit(main())
