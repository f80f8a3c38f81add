from usage_cli.cli import main

main()
