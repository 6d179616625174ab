from spotrun.cli import main

main()
