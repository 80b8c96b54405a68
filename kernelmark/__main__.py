from kernelmark.cli import main

raise SystemExit(main())
