from rankk_cli.cli import main

main()
