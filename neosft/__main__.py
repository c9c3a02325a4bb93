from neosft.cli import main

main()
